"""Drawing codes from a trained `diffusion_prior` run (a prior over the `latent_codes` of a frozen
autoencoder or VAE) and decoding them through that stage one.

    prior = stage_one.load_run("runs/prior_diffusion_conv_ae")
    codes, codec = sample_codes(prior, 64, seed=0, steps=32)
    images = codec.decode(codes)

Example i starts from noise N(0, I) drawn from fold_in(PRNGKey(seed), i); the ODE (`diffusion.sample_ode`
with the model's solver, `steps` steps) runs jitted over DRAW_BATCH examples at a time (the last batch
padded), so a seed gives the same samples whatever `num`. The standardisation of the `latent_codes`
dataset (mean and std of the training codes) is undone before decoding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ae_jax import models
from ae_jax.core import workdir
from ae_jax.core.errors import ConfigError
from ae_jax.generation import denoisers, generate, latent_codes, stage_one

DRAW_BATCH = 500  # examples per jitted ODE solve


def is_diffusion_run(config: Any) -> bool:
  """Whether a run's config is a prior's over continuous codes (a model with the "code_flow" ability)."""
  name = config.model.get("name")
  return name in models.MODELS and "code_flow" in models.abilities(name)


def check_options(prior: stage_one.Run, steps: int, num: int, *, given: Collection[str] = ()) -> None:
  """ConfigError (one line) for a sampling option this prior does not read (`given`: the options the user
  set, `generate.SampleOptions`' field names) or out-of-range values."""
  generate.refuse_unread(prior, given, num)
  if steps < 1:
    raise ConfigError(f"--steps must be >= 1 (ODE steps), got {steps}")


def train_one_first(stage_one_workdir: str, option: str = "--prior") -> str:
  """The error line for `option`=diffusion given an autoencoder's or VAE's own workdir: a diffusion prior
  is a training run of its own, sampled through its workdir; names the priors that pin this run's
  checkpoints (those trained on it), if any."""
  holders: set[str] = set()
  for best in (False, True):
    directory = stage_one.checkpoint_dir(stage_one_workdir, best)
    if os.path.isdir(directory):
      holders.update(h for hs in workdir.pinned_steps(directory).values() for h in hs)
  head = f"{option}=diffusion samples a trained diffusion prior, a run of its own: "
  if holders:
    first, names = sorted(holders)[0], ", ".join(sorted(holders))
    return head + f"sample one trained on this run with --workdir {first} (priors trained on it: {names})"
  return (
    head + "train one with python -m experiments.main --config "
    f"experiments/configs/prior_diffusion.py:{stage_one_workdir} --workdir runs/prior_diffusion, then sample "
    "it with --workdir runs/prior_diffusion"
  )


def initial_noise(seed: int, index: np.ndarray, shape: tuple[int, ...]) -> jax.Array:
  """N(0, I) noise [len(index), *shape] float32, example i from fold_in(PRNGKey(seed), i)."""
  base = jax.random.PRNGKey(seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(index, jnp.uint32))
  return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def sample_codes(
  prior: stage_one.Run,
  num: int,
  *,
  seed: int = 0,
  steps: int = 8,
  progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, Any]:
  """(codes float32 [num, D] in the stage one's code space, the stage one's `latent.LatentCodec`): `num`
  samples of the prior run (module docstring); `progress(n)` after each batch with the examples done."""
  check_options(prior, steps, num)
  codec, mean, std = latent_codes.code_statistics(prior.config.data, prior.workdir)
  shape = tuple(mean.shape)
  model = prior.model

  @jax.jit
  def solve(variables: Any, noise: jax.Array) -> jax.Array:
    return denoisers.draw_codes(model, variables, noise, steps) * std + mean

  variables = jax.device_put(prior.variables)
  out = []
  for start in range(0, num, DRAW_BATCH):
    index = np.arange(start, start + DRAW_BATCH)
    out.append(np.asarray(solve(variables, initial_noise(seed, index, shape))))
    if progress is not None:
      progress(min(start + DRAW_BATCH, num))
  codes = np.concatenate(out)[:num]
  return codes.reshape(num, -1), codec
