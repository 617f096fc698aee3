"""Priors over continuous codes: any autoencoder or VAE run as a generator.

    run = stage_one.load_run("runs/conv_ae")
    codec = LatentCodec.of(run)                             # encode images <-> decode codes
    prior = fit_mixture(codec, 10, covariance="full")       # Ghosh et al. 2020's ex-post density, cached
    images = codec.decode(prior.sample(np.random.default_rng(0), 64))

A model with the "autoencoding" ability (mlp_ae, conv_ae, tied_ae) codes an image as `latent_code(x)`
and reconstructs it with `decode_latent`; a VAE ("generative" and "likelihood": vae_mlp, vae_conv) codes it
as the posterior mean and decodes with `generate` (the mean of p(x|z)), so its prior N(0, I) samples as well
(`standard_normal`). A sequence VAE with a latent per frame ("frame_latents": seq_vae_conv) codes each real
frame as its posterior mean: the mixture is fitted on the frames' codes, a sample is T codes drawn
independently (from the mixture or N(0, I)) and decoded frame by frame, so it has the statistics of single
frames and none of their order.

The mixture is fitted (`ae_jax.generation.mixture`, EM in float64) on the codes of the run's training split
and cached as WORKDIR/latent_priors/<fingerprint>-k<K>-<covariance>-seed<S>.npz, where the fingerprint
names the checkpoint by content, so a retrained run is fitted afresh. Sampling draws from a numpy
Generator of the seed: the same samples on any number of devices.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any

import jax
import numpy as np

from ae_jax import models
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.generation import stage_one
from ae_jax.generation.mixture import GaussianMixture, fit_gaussian_mixture

log = logging.getLogger(__name__)


def _vae_encode(module: Any, x: jax.Array) -> jax.Array:
  return module.encode(x)[0]


def _ae_encode(module: Any, x: jax.Array) -> jax.Array:
  return module.latent_code(x)


def _vae_decode(module: Any, z: jax.Array) -> jax.Array:
  return module.generate(z)


def _ae_decode(module: Any, z: jax.Array) -> jax.Array:
  return module.decode_latent(z)


def _frame_encode(module: Any, x: jax.Array) -> jax.Array:
  return module.frame_codes(x)


def _frame_decode(module: Any, z: jax.Array) -> jax.Array:
  return module.decode_frames(z)


# (encode, decode) of each kind of code
_METHODS = {
  "ae": (_ae_encode, _ae_decode),
  "vae": (_vae_encode, _vae_decode),
  "frames": (_frame_encode, _frame_decode),
}


@dataclasses.dataclass(frozen=True)
class LatentCodec:
  """A frozen run's continuous codes: `encode(inputs [N, ...]) -> codes float32 [N, D]` (a VAE's posterior
  means; [N, T, latent_dim] for a model with a latent per frame, `frames`) and `decode(codes) -> inputs
  float32 [N, ...]` in the run's model range."""

  run: stage_one.Run
  vae: bool
  frames: bool = False

  @staticmethod
  def is_vae(name: str, workdir: str = "this") -> bool:
    """Whether model `name`'s codes are a VAE's (posterior means, prior N(0, I)) rather than an
    autoencoder's; ConfigError when the model has no continuous code to sample."""
    abilities = models.abilities(name)
    if {"generative", "likelihood"} <= abilities or "frame_latents" in abilities:
      return True
    if "autoencoding" in abilities:
      return False
    raise ConfigError(
      f"{workdir} is a '{name}' run, which has no continuous code to sample; give an autoencoder or "
      "VAE run (a model with the 'autoencoding', 'generative' or 'frame_latents' ability), or a prior run "
      "(ar_prior, maskgit_prior, pixelcnn_prior) for a VQ-VAE"
    )

  @classmethod
  def of(cls, run: stage_one.Run) -> LatentCodec:
    """The codec of a run; ConfigError when its model has no continuous code to sample."""
    vae = cls.is_vae(run.config.model.name, run.workdir)
    return cls(run, vae=vae, frames="frame_latents" in models.abilities(run.config.model.name))

  @property
  def frames_per_example(self) -> int:
    """How many codes one example has: T with a latent per frame, else 1."""
    return int(self.run.model.input_shape[0]) if self.frames else 1

  @functools.cached_property
  def _pmapped(self) -> dict[str, Any]:
    model = self.run.model
    encode, decode = _METHODS["frames" if self.frames else "vae" if self.vae else "ae"]

    def apply(method: Any) -> Any:
      return jax.pmap(lambda v, x: model.apply(v, x, method=method), axis_name=parallel.AXIS)

    return {
      "encode": apply(encode),
      "decode": apply(decode),
      "variables": parallel.replicate(self.run.variables),
    }

  def _map(self, kind: str, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    fns = self._pmapped
    devices = tuple(jax.local_devices())
    return stage_one.map_batches(fns[kind], fns["variables"], inputs, batch_size, np.float32, devices)

  def encode(self, inputs: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """inputs [N, ...] (the run's evaluation preprocessing) -> codes float32 [N, D], or [N, T, latent_dim]
    with a latent per frame."""
    codes = self._map("encode", inputs, batch_size)
    return codes if self.frames else codes.reshape(len(codes), -1)

  def decode(self, codes: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """codes [N, D] (or [N, T, latent_dim]) -> inputs float32 [N, ...] in the run's model range."""
    return self._map("decode", np.asarray(codes, np.float32), batch_size)


def training_codes(codec: LatentCodec, max_examples: int | None = None) -> np.ndarray:
  """The codes float32 [N, D] of the run's training split (its first `max_examples` examples; None: all),
  preprocessed for evaluation; with a latent per frame, the codes of their real frames [frames, latent_dim]
  (padding is zeroed before encoding and its codes dropped)."""
  from ae_jax import data
  from ae_jax.data.dataset import stack_examples

  dataset = data.get_dataset(codec.run.config.data)
  train = dataset.split("train")
  n = len(train) if max_examples is None else min(int(max_examples), len(train))
  chunks = []
  for start in range(0, n, 4096):
    batch = stack_examples(train, dataset.info, range(start, min(start + 4096, n)))
    if not codec.frames:
      chunks.append(codec.encode(batch["x"]))
      continue
    real = np.asarray(batch["mask"]) > 0 if "mask" in batch else np.ones(batch["x"].shape[:2], bool)
    chunks.append(codec.encode(np.where(real[..., None], batch["x"], 0.0))[real])
  return np.concatenate(chunks)


def mixture_path(
  run: stage_one.Run, components: int, covariance: str, seed: int, max_examples: int | None = None
) -> str:
  """WORKDIR/latent_priors/<fingerprint>-k<K>-<covariance>-seed<S>[-n<max_examples>].npz."""
  subset = "" if max_examples is None else f"-n{int(max_examples)}"
  name = f"{run.fingerprint}-k{components}-{covariance}-seed{seed}{subset}.npz"
  return os.path.join(run.workdir, "latent_priors", name)


def fit_mixture(
  codec: LatentCodec,
  components: int = 10,
  *,
  covariance: str = "full",
  seed: int = 0,
  max_examples: int | None = None,
) -> GaussianMixture:
  """The Gaussian mixture over the run's training codes: read from its cache (`mixture_path`) when
  there, else fitted and written there with its convergence (EM steps, converged, mean log-likelihood,
  starts; a cache from before the fit recorded its starts, fitted from one seeding, is refitted; a cache
  that cannot be written costs a warning)."""
  path = mixture_path(codec.run, components, covariance, seed, max_examples)
  if os.path.exists(path):
    with np.load(path) as f:
      if "starts" in f:
        fit = {k: f[k].item() for k in ("converged", "iterations", "log_likelihood", "starts")}
        return GaussianMixture(f["weights"], f["means"], f["covariances"], **fit)
  codes = training_codes(codec, max_examples)
  mixture = fit_gaussian_mixture(codes, components, covariance=covariance, seed=seed)
  log.info(
    "latent prior: %d-component %s Gaussian mixture fitted on %d codes (best of %d starts: %.4g nats per "
    "code, %d EM steps, %s)",
    components,
    covariance,
    len(codes),
    mixture.starts,
    mixture.log_likelihood,
    mixture.iterations,
    "converged" if mixture.converged else "not converged",
  )
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
      np.savez(
        f,
        weights=mixture.weights,
        means=mixture.means,
        covariances=mixture.covariances,
        converged=mixture.converged,
        iterations=mixture.iterations,
        log_likelihood=mixture.log_likelihood,
        starts=mixture.starts,
      )
    os.replace(path + ".tmp", path)
  except OSError as e:
    log.warning("latent prior: could not cache the mixture at %s (%s)", path, e)
  return mixture


def mixture_codes(codec: LatentCodec, mixture: GaussianMixture, num: int, seed: int) -> np.ndarray:
  """`num` examples' codes float32 [num, D] from `mixture`, drawn from numpy's seed; with a latent per
  frame [num, T, latent_dim], the T frames of an example drawn independently."""
  k = codec.frames_per_example
  codes = mixture.sample(np.random.default_rng(seed), num * k).astype(np.float32)
  return codes.reshape(num, k, -1) if codec.frames else codes


def standard_normal(codec: LatentCodec, num: int, seed: int) -> np.ndarray:
  """`num` codes float32 [num, latent_dim] ([num, T, latent_dim] with a latent per frame) from a VAE's
  prior N(0, I), drawn from numpy's seed."""
  if not codec.vae:
    raise ConfigError(
      f"--prior=normal samples a VAE's prior N(0, I); {codec.run.workdir} is a "
      f"'{codec.run.config.model.name}' run, whose codes have no prior: use --prior=mixture"
    )
  shape = (num, codec.frames_per_example, int(codec.run.model.latent_dim))
  codes = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
  return codes if codec.frames else codes[:, 0]
