"""The `latent_codes` dataset: a frozen autoencoder's or VAE's continuous codes of its own dataset's
images, standardised, for a prior over them (`diffusion_prior`).

    config.data = data_config("latent_codes", tokenizer_workdir="runs/demo_conv_ae")   # tokenizer_step, _best

The stage one is any run with the "autoencoding" ability (its code `latent_code(x)`) or a VAE (its posterior
means): `ae_jax.generation.latent.LatentCodec`. Its dataset is opened with its evaluation preprocessing,
every split is encoded once, and examples are

    x      float32 code_shape  the code standardised per element: (code - mean) / std, mean and std over
                               the training split's codes
    label  int32 []            the image's label (-1 where its dataset has none)

code_shape is [D] for a flat code and [h, w, c] for a spatial one (a model with `latent_grid()` and
`embed_dim`: kl_autoencoder), so a denoiser can see the grid.

Cache: WORKDIR/latent_codes/<fingerprint>/<split>.npz under the stage one's workdir (or `cache_dir`/
<fingerprint>/), holding the raw codes [N, *code_shape], labels [N] and the fingerprint; mean and std are
computed from the cached training codes on every load (float64, then float32), so training and sampling
standardise alike, and `code_statistics` gives them to the sampler, which undoes the standardisation. The
fingerprint names the checkpoint by content: a retrained stage one is encoded afresh. The options, the
pinning of the stage one's step and fingerprint and their error lines are those of the `codes` dataset
(`ae_jax.generation.codes`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ae_jax import models
from ae_jax.core import workdir
from ae_jax.core.console import LOG_ONLY
from ae_jax.core.errors import ConfigError, DataError
from ae_jax.data import dataset, sources
from ae_jax.generation import codes, stage_one

log = logging.getLogger(__name__)

OPTIONS: dict[str, Any] = {
  "tokenizer_workdir": "",  # the stage one's (an autoencoder's or VAE's) workdir
  "tokenizer_step": 0,  # its checkpoint step; 0: the latest
  "tokenizer_best": False,  # its config.keep_best state (WORKDIR/best) instead
  "tokenizer_fingerprint": "",  # the stage one's fingerprint, checked on load ("": not checked)
  "cache_dir": "",  # "": WORKDIR/latent_codes under the stage one's workdir
  "encode_batch_size": 512,  # images per encoding batch (split over the local devices)
}
STD_FLOOR = 1e-6  # a code element that never varies is standardised to 0, not divided by 0


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compared and hashed by identity
class LatentCodesInfo(dataset.DatasetInfo):
  """DatasetInfo of the codes: also the code shape, the standardisation (mean, std float32 [*code_shape])
  and the stage one's fingerprint and workdir."""

  code_shape: tuple[int, ...] = ()
  mean: np.ndarray | None = None
  std: np.ndarray | None = None
  fingerprint: str = ""
  tokenizer_workdir: str = ""


def code_shape(config: ml_collections.ConfigDict, where: str = "the stage one") -> tuple[int, ...]:
  """The shape of one code of a stage-one run's config (without restoring it): [h, w, c] for a spatial
  code (`latent_grid()` and `embed_dim`), else [D]. ConfigError for a model without a continuous code, or
  with a code per frame."""
  from ae_jax import data
  from ae_jax.generation import latent

  name = config.model.name
  latent.LatentCodec.is_vae(name, where)
  if "frame_latents" in models.abilities(name):
    raise ConfigError(
      f"{where} is a '{name}' run, with a code per frame; a prior over codes needs one code per example: "
      "use --prior=mixture or normal with experiments.sample"
    )
  shape = tuple(config.model.get("input_shape") or data.example_spec(config.data).shape)
  options = {k: v for k, v in config.model.items() if k not in ("name", "input_shape")}
  model = models.get_model(name, input_shape=shape, **options)
  if hasattr(model, "latent_grid") and hasattr(model, "embed_dim"):
    return (*model.latent_grid(), int(model.embed_dim))
  encode = latent._METHODS["vae" if latent.LatentCodec.is_vae(name) else "ae"][0]
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}
  x = jax.ShapeDtypeStruct((1, *shape), jnp.dtype(data.example_spec(config.data).dtype))
  out, _ = jax.eval_shape(lambda x: model.init_with_output(rngs, x, method=encode), x)
  return (math.prod(out.shape[1:]),)


def stage_one_config(data: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, tuple[int, ...]]:
  """(the stage one's saved config, its code shape), from its config alone."""
  if not data.tokenizer_workdir:
    raise ConfigError(
      "config.data.tokenizer_workdir is empty; set it to the workdir of a trained autoencoder or VAE run"
    )
  codes._check_pinned_step(data, codes._prior_workdir())
  step = int(data.tokenizer_step) or None
  _, config = stage_one.saved_config(data.tokenizer_workdir, step, bool(data.tokenizer_best))
  return config, code_shape(config, f"config.data.tokenizer_workdir={data.tokenizer_workdir}")


def pinned_run(data: ml_collections.ConfigDict, prior: str | None = None) -> stage_one.Run:
  """The stage one a `latent_codes` data config names, checked against the step and fingerprint a prior's
  config pins and pinned for `prior` (as `codes.pinned_stage_one` does for a VQ-VAE)."""
  codes._check_pinned_step(data, prior)
  best = bool(data.tokenizer_best)
  run = stage_one.load_run(data.tokenizer_workdir, int(data.tokenizer_step) or None, best)
  pinned = data.get("tokenizer_fingerprint", "")
  if pinned and run.fingerprint != pinned:
    raise DataError(
      f"{codes._the_prior(prior)} was trained on the stage one {run.workdir} with fingerprint {pinned}, but "
      f"its step {run.step} now has fingerprint {run.fingerprint} (retrained or replaced); restore the stage "
      "one it was trained on, or train a new prior on this one in a new --workdir"
    )
  if pinned and prior:
    try:
      workdir.pin(stage_one.checkpoint_dir(run.workdir, best), run.step, prior, fingerprint=run.fingerprint)
    except OSError as e:
      log.info("cannot pin step %d of %s for %s (%s)", run.step, run.workdir, prior, e, extra=LOG_ONLY)
  return run


def _encode_split(codec: Any, source: Any, info: dataset.DatasetInfo, batch_size: int) -> dict:
  """{"codes": float32 [N, D], "label": int32 [N]} of every record of `source` (evaluation preprocessing)."""
  chunks, labels = [], []
  for start in range(0, len(source), codes.ENCODE_CHUNK):
    batch = dataset.stack_examples(source, info, range(start, min(start + codes.ENCODE_CHUNK, len(source))))
    chunks.append(codec.encode(batch["x"], batch_size))
    labels.append(np.asarray(batch.get("label", np.full(len(batch["x"]), -1)), np.int32))
  empty = np.zeros((0, 0), np.float32)
  return {
    "codes": np.concatenate(chunks) if chunks else empty,
    "label": np.concatenate(labels) if labels else np.zeros((0,), np.int32),
  }


def _split_codes(codec: Any, images: dataset.Dataset, role: str, data: ml_collections.ConfigDict) -> dict:
  """The raw codes {"codes" [N, D], "label" [N]} of split `role`: from its cache file, else encoded and
  written there (a cache that cannot be read is encoded again, one that cannot be written costs a
  warning)."""
  run = codec.run
  root = os.path.abspath(os.path.expanduser(data.cache_dir or os.path.join(run.workdir, "latent_codes")))
  path = os.path.join(root, run.fingerprint, f"{role}.npz")
  source = images.splits[role]
  workdir.remove_stale_temporaries(path)
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        arrays = {"codes": f["codes"], "label": f["label"], "fingerprint": str(f["fingerprint"])}
      if arrays.pop("fingerprint") == run.fingerprint and len(arrays["codes"]) == len(source):
        return arrays
      log.warning("the code cache %s belongs to another stage one or split; encoding again", path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
      log.warning("the code cache %s cannot be read (%s); encoding the split again", path, e)
  log.info("encoding the %s split (%d images) with stage one %s", role, len(source), run.fingerprint)
  arrays = _encode_split(codec, source, images.info, int(data.encode_batch_size))
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fingerprint = np.str_(run.fingerprint)
    workdir.write_whole(path, lambda f: np.savez(f, **arrays, fingerprint=fingerprint))
  except OSError as e:
    log.warning("cannot write the code cache %s (%s); the codes stay in memory only", path, e.strerror or e)
  return arrays


def statistics(train_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) float32 [D] of codes [N, D], per element, in float64; std floored at STD_FLOOR."""
  x = np.asarray(train_codes, np.float64)
  return x.mean(0).astype(np.float32), np.maximum(x.std(0), STD_FLOOR).astype(np.float32)


def code_statistics(
  data: ml_collections.ConfigDict, prior: str | None = None
) -> tuple[Any, np.ndarray, np.ndarray]:
  """(the stage one's LatentCodec, mean, std float32 [*code_shape]) of a `latent_codes` data config: what
  a sampler needs to undo the standardisation and decode (the training split encoded once, cached)."""
  from ae_jax.generation import latent

  _, shape = stage_one_config(data)
  codec = latent.LatentCodec.of(pinned_run(data, prior))
  images = dataset.get_dataset(codec.run.config.data)
  mean, std = statistics(_split_codes(codec, images, "train", data)["codes"])
  return codec, mean.reshape(shape), std.reshape(shape)


def _preprocess(record: Any, index: int) -> dict[str, np.ndarray]:
  return {"x": np.asarray(record["codes"], np.float32), "label": np.int32(record["label"])}


def _batch_preprocess(records: Any, indices: Any, xp: Any = np) -> dict[str, Any]:
  return {
    "x": xp.asarray(records["codes"]).astype(xp.float32),
    "label": xp.asarray(records["label"]).astype(xp.int32),
  }


def _device_preprocess(records: Any, indices: Any) -> dict[str, Any]:
  return _batch_preprocess(records, indices, jnp)


def _load(data: ml_collections.ConfigDict) -> dataset.Dataset:
  from ae_jax.generation import latent

  config, shape = stage_one_config(data)
  codec = latent.LatentCodec.of(pinned_run(data, codes._prior_workdir()))
  images = dataset.get_dataset(config.data)
  raw = {role: _split_codes(codec, images, role, data) for role in images.splits}
  mean, std = statistics(raw["train"]["codes"])
  info = LatentCodesInfo(
    example=dataset.ExampleSpec(shape, "float32"),
    preprocess=_preprocess,
    class_names=images.info.class_names,
    batch_preprocess=_batch_preprocess,
    device_preprocess=_device_preprocess,
    code_shape=shape,
    mean=mean.reshape(shape),
    std=std.reshape(shape),
    fingerprint=codec.run.fingerprint,
    tokenizer_workdir=codec.run.workdir,
  )
  splits = {}
  for role, arrays in raw.items():
    standard = ((arrays["codes"] - mean) / std).astype(np.float32).reshape(-1, *shape)
    splits[role] = sources.ArraySource({"codes": standard, "label": arrays["label"]})
  return dataset.Dataset("latent_codes", splits, info)


dataset.register(
  dataset.DatasetSpec(
    name="latent_codes",
    load=_load,
    options=OPTIONS,
    example=lambda data: dataset.ExampleSpec(stage_one_config(data)[1], "float32"),
    splits=lambda data: dataset.split_roles(stage_one_config(data)[0].data),
    description="a frozen autoencoder's or VAE's continuous codes of its own dataset, standardised "
    "(the diffusion prior)",
  )
)
