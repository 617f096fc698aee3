"""The `codes` dataset: a frozen VQ-VAE's code indices of every image of its own dataset, for a prior.

    config.data = data_config("codes", tokenizer_workdir="runs/vqvae_fmnist")   # tokenizer_step, _best

The stage one is the run in `tokenizer_workdir` (its latest checkpoint, `tokenizer_step`, or with
`tokenizer_best` its config.keep_best state; `ae_jax.generation.stage_one`). Its own dataset (the config
saved with
that checkpoint) is opened with its evaluation preprocessing, every split is encoded once, and examples are

    x      int32 [L]  the image's code grid in raster order (rvq: L = h * w * S, stages innermost)
    label  int32 []   the image's label (-1 where its dataset has none)

Cache: WORKDIR/codes/<fingerprint>/<split>.npz under the stage one's workdir (or `cache_dir`/<fingerprint>/
when set), each holding tokens [N, L], labels [N], the fingerprint, grid and vocabulary. The fingerprint
names the checkpoint by its content (`stage_one.fingerprint`), so a retrained or replaced stage one is
encoded afresh, never served stale codes; a file whose fingerprint or size disagrees is recomputed too.
When the cache folder cannot be written, the codes are computed in memory (a warning says so).

An unreadable cache file (truncated, not an .npz) is encoded again, with one warning; the temporary files
of a cache write that was killed are removed when the split is next opened.

A prior's config pins the stage one: `tokenizer_step` and `tokenizer_fingerprint` (`prior_ar.py` sets
both). `pinned_stage_one` loads it wherever a prior needs it (training and evaluation through this dataset,
sampling through `generate.tokenizer_of`) and refuses, in one line naming the prior, a stage one whose
fingerprint differs (retrained or replaced in the same workdir) or whose pinned step is gone. A prior that
loads its stage one pins that step (`workdir.pin`: STAGE_ONE_WORKDIR/pinned/checkpoints/), which the stage
one's checkpoint manager never prunes while the prior's workdir exists.

`dataset.info` (`CodesInfo`) also holds the vocabulary size, grid shape, fingerprint and the stage one's
workdir. A missing stage one is one DataNotFoundError line; a model without discrete codes, or codes of a
vocabulary above `stage_one.MAX_VOCAB` (2^16), one ConfigError line.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections
import numpy as np

from ae_jax.core import workdir
from ae_jax.core.console import LOG_ONLY
from ae_jax.core.errors import ConfigError, DataError, DataNotFoundError
from ae_jax.data import dataset, sources

log = logging.getLogger(__name__)

OPTIONS: dict[str, Any] = {
  "tokenizer_workdir": "",  # the stage one's (a VQ-VAE run's) workdir
  "tokenizer_step": 0,  # its checkpoint step; 0: the latest
  "tokenizer_best": False,  # its config.keep_best state (WORKDIR/best) instead
  "tokenizer_fingerprint": "",  # the stage one's fingerprint, checked on load ("": not checked)
  "cache_dir": "",  # "": WORKDIR/codes under the stage one's workdir
  "encode_batch_size": 256,  # images per encoding batch (split over the local devices)
}
ENCODE_CHUNK = 4096  # records read and preprocessed at a time while encoding
_loading: contextvars.ContextVar[str | None] = contextvars.ContextVar("prior_workdir", default=None)


@contextlib.contextmanager
def loading_prior(prior: str) -> Iterator[None]:
  """Within it, the codes dataset is opened for the prior run at `prior` (named in its errors and pins)."""
  token = _loading.set(os.path.abspath(prior))
  try:
    yield
  finally:
    _loading.reset(token)


def _prior_workdir() -> str | None:
  """The workdir of the prior this process loads (`loading_prior`) or trains (`workdir.held`), if known."""
  return _loading.get() or workdir.held()


@dataclasses.dataclass(frozen=True)
class CodesInfo(dataset.DatasetInfo):
  """DatasetInfo of the codes: also the vocabulary K, the code grid ((h, w) or (h, w, S)), the stage one's
  fingerprint and workdir."""

  vocab_size: int = 0
  grid: tuple[int, ...] = ()
  fingerprint: str = ""
  tokenizer_workdir: str = ""


def stage_one_config(data: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, Any]:
  """(the stage one's saved config, its CodeLayout), from its config alone."""
  from ae_jax.generation import stage_one

  if not data.tokenizer_workdir:
    raise ConfigError(
      "config.data.tokenizer_workdir is empty; set it to the workdir of a trained VQ-VAE run (the stage one)"
    )
  _check_pinned_step(data, _prior_workdir())
  step = int(data.tokenizer_step) or None
  _, config = stage_one.saved_config(data.tokenizer_workdir, step, bool(data.tokenizer_best))
  layout = stage_one.code_layout(config)
  stage_one.check_vocab(layout, f"config.data.tokenizer_workdir={data.tokenizer_workdir}")
  return config, layout


def _the_prior(prior: str | None) -> str:
  return f"the prior at {os.path.abspath(prior)}" if prior else "this prior"


def _check_pinned_step(data: ml_collections.ConfigDict, prior: str | None) -> None:
  """A DataNotFoundError naming the prior when the step its config pins is no longer in the stage one."""
  from ae_jax.generation import stage_one

  step, pinned = int(data.tokenizer_step), data.get("tokenizer_fingerprint", "")
  if not (step and pinned):
    return
  try:
    stage_one.resolve_step(data.tokenizer_workdir, step, bool(data.tokenizer_best))
  except DataNotFoundError as e:
    # the prior being loaded, else those whose pins are left for that step
    directory = stage_one.checkpoint_dir(data.tokenizer_workdir, bool(data.tokenizer_best))
    holders = [os.path.abspath(prior)] if prior else workdir.pinned_steps(directory).get(step, [])
    if len(holders) > 1:
      who = f"the priors at {', '.join(holders)} depend"
    else:
      who = f"{_the_prior(holders[0] if holders else None)} depends"
    raise DataNotFoundError(
      f"{who} on step {step} (fingerprint {pinned}) of the stage one "
      f"{os.path.abspath(data.tokenizer_workdir)}, which is gone ({e}; config.keep_checkpoints prunes the "
      "steps no prior pins); restore that checkpoint, or train a new prior on the stage one as it is now "
      "in a new --workdir"
    ) from None


def pinned_stage_one(data: ml_collections.ConfigDict, prior: str | None = None) -> Any:
  """The stage one a `codes` data config names (`stage_one.load_stage_one`), checked against the step and
  fingerprint a prior's config pins (DataNotFoundError when the step is gone, DataError when its content
  differs; both name `prior`, the prior's workdir, when given) and pinned for `prior` (`workdir.pin`)."""
  from ae_jax.generation import stage_one

  _check_pinned_step(data, prior)
  step, best = int(data.tokenizer_step) or None, bool(data.tokenizer_best)
  tokenizer = stage_one.load_stage_one(data.tokenizer_workdir, step, best)
  pinned = data.get("tokenizer_fingerprint", "")
  if pinned and tokenizer.fingerprint != pinned:
    raise DataError(
      f"{_the_prior(prior)} was trained on the stage one {tokenizer.run.workdir} with fingerprint {pinned}, "
      f"but its step {tokenizer.run.step} now has fingerprint {tokenizer.fingerprint} (retrained or "
      "replaced); restore the stage one it was trained on, or train a new prior on this one in a new "
      "--workdir"
    )
  if pinned and prior:
    directory = stage_one.checkpoint_dir(tokenizer.run.workdir, best)
    try:
      workdir.pin(directory, tokenizer.run.step, prior, fingerprint=tokenizer.fingerprint)
    except OSError as e:
      log.info(
        "cannot pin step %d of %s for %s (%s): config.keep_checkpoints of that run may prune it",
        tokenizer.run.step,
        directory,
        prior,
        e.strerror or e,
        extra=LOG_ONLY,
      )
  return tokenizer


def _example(data: ml_collections.ConfigDict) -> dataset.ExampleSpec:
  return dataset.ExampleSpec((stage_one_config(data)[1].seq_len,), "int32")


def _splits(data: ml_collections.ConfigDict) -> tuple[str, ...]:
  return dataset.split_roles(stage_one_config(data)[0].data)


def _read_cache(path: str, fingerprint: str, n: int, seq_len: int) -> dict[str, np.ndarray] | None:
  """The cached codes of a split, or None when missing or not those of this stage one and split."""
  workdir.remove_stale_temporaries(path)
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as f:
      arrays = {"tokens": f["tokens"], "label": f["label"], "fingerprint": str(f["fingerprint"])}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    why = str(e).splitlines()[0] if str(e) else type(e).__name__
    log.warning("the code cache %s cannot be read (%s); encoding the split again", path, why)
    return None
  if arrays.pop("fingerprint") != fingerprint or arrays["tokens"].shape != (n, seq_len):
    log.warning("the code cache %s belongs to another stage one or split; encoding again", path)
    return None
  return arrays


def _write_cache(path: str, arrays: Mapping[str, np.ndarray], fingerprint: str, info: CodesInfo) -> None:
  # Every process of a multi-host run encodes the split and writes it, each through a file of its own
  # renamed over the cache, so processes sharing a file system leave one whole file.
  extra = dict(fingerprint=np.str_(fingerprint), grid=np.asarray(info.grid), vocab=info.vocab_size)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    workdir.write_whole(path, lambda f: np.savez(f, **arrays, **extra))
  except OSError as e:
    log.warning("cannot write the code cache %s (%s); the codes stay in memory only", path, e.strerror or e)


def encode_split(tokenizer: Any, source: Any, info: dataset.DatasetInfo, batch_size: int, what: str) -> dict:
  """{"tokens": int32 [N, L], "label": int32 [N]} of every record of `source` (the stage one's split,
  preprocessed for evaluation)."""
  from ae_jax.generation import stage_one
  from ae_jax.training.outputs import Progress

  preprocess = info.batch_preprocess_for(False)
  tokens, labels = [], []
  progress = Progress(what, len(source))
  for start in range(0, len(source), ENCODE_CHUNK):
    indices = np.arange(start, min(start + ENCODE_CHUNK, len(source)), dtype=np.int64)
    batch = preprocess(sources.gather(source, indices), indices)
    tokens.append(stage_one.flat_tokens(tokenizer.encode_codes(batch["x"], batch_size)))
    labels.append(np.asarray(batch.get("label", np.full(len(indices), -1)), np.int32))
    progress.update(int(indices[-1]) + 1)
  progress.close()
  seq_len = tokenizer.layout.seq_len
  return {
    "tokens": np.concatenate(tokens) if tokens else np.zeros((0, seq_len), np.int32),
    "label": np.concatenate(labels) if labels else np.zeros((0,), np.int32),
  }


def _preprocess(record: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
  return {"x": np.asarray(record["tokens"], np.int32), "label": np.int32(record["label"])}


def _batch_preprocess(records: Mapping[str, Any], indices: Any, xp: Any = np) -> dict[str, Any]:
  tokens, labels = xp.asarray(records["tokens"]), xp.asarray(records["label"])
  return {"x": tokens.astype(xp.int32), "label": labels.astype(xp.int32)}


def _device_preprocess(records: Mapping[str, Any], indices: Any) -> dict[str, Any]:
  import jax.numpy as jnp

  return _batch_preprocess(records, indices, jnp)


def _load(data: ml_collections.ConfigDict) -> dataset.Dataset:

  config, layout = stage_one_config(data)
  tokenizer = pinned_stage_one(data, _prior_workdir())
  images = dataset.get_dataset(config.data)
  root = data.cache_dir or os.path.join(tokenizer.run.workdir, "codes")
  info = CodesInfo(
    example=dataset.ExampleSpec((layout.seq_len,), "int32"),
    preprocess=_preprocess,
    class_names=images.info.class_names,
    batch_preprocess=_batch_preprocess,
    device_preprocess=_device_preprocess,
    vocab_size=layout.vocab_size,
    grid=tuple(layout.grid),
    fingerprint=tokenizer.fingerprint,
    tokenizer_workdir=tokenizer.run.workdir,
  )
  splits = {}
  for role, source in images.splits.items():
    path = os.path.join(os.path.abspath(os.path.expanduser(root)), tokenizer.fingerprint, f"{role}.npz")
    arrays = _read_cache(path, tokenizer.fingerprint, len(source), layout.seq_len)
    if arrays is None:
      log.info(
        "encoding the %s split (%d images) with stage one %s", role, len(source), tokenizer.fingerprint
      )
      what = f"encoding {role} with the stage one"
      arrays = encode_split(tokenizer, source, images.info, int(data.encode_batch_size), what)
      _write_cache(path, arrays, tokenizer.fingerprint, info)
    splits[role] = sources.ArraySource(arrays)
  return dataset.Dataset("codes", splits, info)


dataset.register(
  dataset.DatasetSpec(
    name="codes",
    load=_load,
    options=OPTIONS,
    example=_example,
    splits=_splits,
    description="a frozen VQ-VAE's code indices of its own dataset's images (stage-two priors)",
  )
)
