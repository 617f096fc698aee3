"""A finished ae-jax run loaded for use by another: a frozen tokenizer (stage one) for a prior over its codes.

    run = stage_one.load_run("runs/prior_ar")                   # any run: config, model, variables
    tok = stage_one.load_stage_one("runs/vqvae_fmnist")         # latest step; step=N or best=True
    codes = tok.encode_codes(images)                            # int32 [N, h, w] ([N, h, w, S] for rvq)
    images = tok.decode_codes(codes)                            # float32 [N, H, W, C], model range

A run's workdir holds `checkpoints/<step>/{state,config}` (and `best/<step>/...` with config.keep_best,
`ae_jax.training.checkpoint`); the config saved with a step is the one the run trained with, so the model is
rebuilt
from it exactly as training built it (`train.build`). The state is restored into zeros of its abstract
shape (`jax.eval_shape` of the initialisation: nothing is compiled to load). Variables are read-only numpy
arrays: nothing here ever updates them.

`fingerprint` names a checkpoint by its content: "<step>-<16 hex digits of the SHA-256 of every variable's
path, dtype, shape and bytes>", so a retrained or replaced stage one never matches an old cache.

Codes of a VQ-VAE (`ae_jax.models.vqvae`): indices [B, h, w] for vq, fsq, lfq and gumbel (fsq and lfq:
the index of the implicit codebook of prod(levels) or 2^code_dim codes), [B, h, w, S] for rvq; one
vocabulary of `codebooks()[0]` tokens. `code_vectors` maps indices back to the quantized latents the
decoder reads (the forward value of the quantizer at evaluation: rvq sums its first `eval_stages` stages),
so `decode_codes(encode_codes(x))` is the model's own reconstruction of x to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError, DataNotFoundError
from ae_jax.training import checkpoint

# The largest code vocabulary a prior predicts directly (one softmax over all of it).
MAX_VOCAB = 2**16


def checkpoint_dir(workdir: str, best: bool = False) -> str:
  """WORKDIR/checkpoints, or WORKDIR/best (the config.keep_best state)."""
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), "best" if best else "checkpoints")


def resolve_step(workdir: str, step: int | None = None, best: bool = False) -> int:
  """The checkpoint step asked for: `step` (None or 0: the latest) of WORKDIR/checkpoints (or best/).
  Raises DataNotFoundError naming the workdir when it has no such checkpoint."""
  directory = checkpoint_dir(workdir, best)
  what = "best state" if best else "checkpoint"
  if not os.path.isdir(directory):
    saves = "; config.keep_best saves one" if best else ""
    raise DataNotFoundError(
      f"{os.path.dirname(directory)} has no {what} (no {directory}{saves}); train that run first or fix "
      "the path"
    )
  names = os.listdir(directory)
  steps = sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))
  if not steps:
    raise DataNotFoundError(f"{directory} holds no complete {what}; train that run first or fix the path")
  if step and step not in steps:
    raise DataNotFoundError(f"{directory} has no step {step}; it has {steps}")
  return int(step) if step else steps[-1]


def saved_config(
  workdir: str, step: int | None = None, best: bool = False
) -> tuple[int, ml_collections.ConfigDict]:
  """(step, the config the run saved with that checkpoint), without restoring any state."""
  step = resolve_step(workdir, step, best)
  ckpt = checkpoint.Checkpointer(checkpoint_dir(workdir, best), keep=1_000_000, async_save=False)
  try:
    saved = ckpt.restore_config(step)
  finally:
    ckpt.close()
  saved.pop("best", None)
  return step, ml_collections.ConfigDict(json.loads(json.dumps(saved)))


@dataclasses.dataclass(frozen=True)
class CodeLayout:
  """The discrete codes of a stage one, known from its config alone: the code grid per image ((h, w), or
  (h, w, S) with S residual stages), the vocabulary (tokens per position and stage), the image shape and
  the number of classes of its dataset (0: none or unknown)."""

  grid: tuple[int, ...]
  vocab_size: int
  image_shape: tuple[int, ...]
  num_classes: int
  quantizer: str

  @property
  def seq_len(self) -> int:
    """Tokens per image: the grid flattened in raster order, residual stages innermost."""
    return math.prod(self.grid)


def code_layout(config: ml_collections.ConfigDict) -> CodeLayout:
  """The CodeLayout of a stage-one run's config; ConfigError unless its model has discrete codes."""
  from ae_jax import data, models

  name = config.model.name
  if "quantized" not in models.abilities(name):
    raise ConfigError(
      f"the stage one is a '{name}' run, which has no discrete codes; give a VQ-VAE run (model 'vqvae')"
    )
  shape = tuple(config.model.get("input_shape") or data.example_spec(config.data).shape)
  options = {k: v for k, v in config.model.items() if k not in ("name", "input_shape")}
  model = models.get_model(name, **options)
  factor = 2 ** int(model.num_downsamples)
  spec, section = model.quantizer_spec()
  stages = (len(spec.codebooks(section)),) if spec.staged else ()
  names = data.get_spec(config.data.name).class_names
  return CodeLayout(
    grid=(shape[0] // factor, shape[1] // factor, *stages),
    vocab_size=int(model.codebooks()[0]),
    image_shape=shape,
    num_classes=len(names) if names else 0,
    quantizer=spec.name,
  )


def fingerprint(step: int, variables: Any) -> str:
  """ "<step>-<16 hex digits>": a SHA-256 over every leaf's path, dtype, shape and bytes."""
  digest = hashlib.sha256()
  leaves = [(jax.tree_util.keystr(p), v) for p, v in jax.tree_util.tree_leaves_with_path(variables)]
  for path, leaf in sorted(leaves, key=lambda kv: kv[0]):
    leaf = np.asarray(leaf)
    digest.update(f"{path}|{leaf.dtype}|{leaf.shape}|".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return f"{int(step)}-{digest.hexdigest()[:16]}"


def _frozen(tree: Any) -> Any:
  """Read-only numpy copies of every leaf."""

  def freeze(x: Any) -> np.ndarray:
    x = np.array(x)
    x.flags.writeable = False
    return x

  return jax.tree.map(freeze, tree)


@dataclasses.dataclass(frozen=True)
class Run:
  """A restored run: its workdir, checkpoint step (of best/ when `best`), saved config, model (built as
  training built it), variables {"params", ...model state} (read-only numpy) and `fingerprint`."""

  workdir: str
  step: int
  best: bool
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: Any = dataclasses.field(repr=False)
  fingerprint: str
  input_shape: tuple[int, ...]
  input_dtype: str


def load_run(workdir: str, step: int | None = None, best: bool = False) -> Run:
  """Restores a run's checkpoint (`step`: None or 0 the latest; `best`: the config.keep_best state); its
  variables are the run's evaluation weights (the weight EMA when it kept one, `train.evaluation_state`).
  DataNotFoundError when it has none, CheckpointCorruptError when it cannot be read."""
  from ae_jax import data
  from ae_jax.generation import codes
  from ae_jax.training import adversarial, train

  step, config = saved_config(workdir, step, best)
  with codes.loading_prior(workdir):  # a prior's errors about its stage one name it
    spec = data.example_spec(config.data)
  shape = tuple(config.model.get("input_shape") or spec.shape)
  model, _, tx, _ = train.build(config, shape)

  # A run with a weight EMA or a discriminator saved them too: the target holds them, and the run's
  # evaluation weights (the EMA when it kept one) are what the stage one encodes and decodes with.
  ema = float(config.get("ema_decay", 0.0)) > 0
  adversary = adversarial.build(config) if adversarial.enabled(config) else None

  def fresh() -> train.TrainState:
    keys = jax.random.split(jax.random.PRNGKey(0), 1 + len(train.RNG_STREAMS))
    rngs = {"params": keys[0], **dict(zip(train.RNG_STREAMS, keys[1:], strict=True))}
    example = jnp.zeros((1, *shape), spec.dtype)
    variables = dict(train.init_fn(model)(rngs, example))
    params = variables.pop("params")
    disc = None if adversary is None else adversarial.init_state(adversary, example, 0)
    return train.TrainState(
      jnp.zeros((), jnp.int32), params, variables, tx.init(params), keys[0], params if ema else None, disc
    )

  target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(fresh))
  ckpt = checkpoint.Checkpointer(checkpoint_dir(workdir, best), keep=1_000_000, async_save=False)
  try:
    state = train.evaluation_state(ckpt.restore(step, target, config.to_dict()))
  finally:
    ckpt.close()
  variables = _frozen({"params": state.params, **state.model_state})
  path = os.path.abspath(workdir)
  return Run(path, step, best, config, model, variables, fingerprint(step, variables), shape, spec.dtype)


# ----------------------------------------------------------------------------- codes of a VQ-VAE


def code_vectors(model: nn.Module, variables: Any, indices: jax.Array) -> jax.Array:
  """The quantized latents [B, h, w, D] (float32) of a VQVAE's code indices [B, h, w] ([B, h, w, S] for
  rvq): its quantizer's `lookup`, what `model.quantize` returns as `quantized` at evaluation for the inputs
  those indices came from, to float32 rounding (the forward value there is z_e + (z_q - z_e)). Pure:
  reads `variables` only."""
  indices = jnp.asarray(indices, jnp.int32)
  return model.apply(variables, indices, method=lambda m, i: m.vq.lookup(i))


def _indices_of(module: nn.Module, x: jax.Array) -> jax.Array:
  return module.quantize(module.encode(x), train=False)["indices"]


def _decode_indices(module: nn.Module, indices: jax.Array, variables: Any) -> jax.Array:
  return module.decode(code_vectors(module, variables, indices))


def _pmapped(model: nn.Module, kind: str, devices: tuple) -> Any:
  """The pmapped encoder ("encode": images -> indices) or decoder ("decode": indices -> images)."""

  def encode(variables: Any, x: jax.Array) -> jax.Array:
    return model.apply(variables, x, method=_indices_of)

  def decode(variables: Any, indices: jax.Array) -> jax.Array:
    return model.apply(variables, indices, variables, method=_decode_indices)

  return jax.pmap(encode if kind == "encode" else decode, axis_name=parallel.AXIS, devices=devices)


def map_batches(
  fn: Any, replicated: Any, inputs: np.ndarray, batch_size: int, out_dtype: Any, devices: tuple
) -> np.ndarray:
  """A pmapped `fn(replicated variables, x [devices, per_device, ...])` over inputs [N, ...], `batch_size`
  at a time (rounded up to a multiple of the devices; the last chunk zero-padded, so one compile); the
  outputs [N, ...] as `out_dtype`."""
  per_device = max(1, -(-int(batch_size) // len(devices)))
  batch = per_device * len(devices)
  outputs = []
  for start in range(0, len(inputs), batch):
    chunk = np.asarray(inputs[start : start + batch])
    n = len(chunk)
    chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
    out = fn(replicated, parallel.shard(chunk.reshape(len(devices), per_device, *chunk.shape[1:]), devices))
    out = np.asarray(jax.device_get(out))
    outputs.append(out.reshape(batch, *out.shape[2:])[:n].astype(out_dtype))
  if not outputs:
    return np.zeros((0,), out_dtype)
  return np.concatenate(outputs)


def to_unit(config: ml_collections.ConfigDict, images: np.ndarray) -> np.ndarray:
  """Images in a run's model range -> [0, 1] for display (its dataset's scale), clipped."""
  from ae_jax.data import images as image_data

  scale = config.data.get("scale")
  if config.data.get("binarize", "none") == "dynamic" or scale not in image_data.SCALES:
    convert = lambda x: x  # noqa: E731 - binary data, or a dataset without a scale: already in [0, 1]
  else:
    convert = image_data.SCALES[scale][1]
  return np.clip(convert(np.asarray(images, np.float32)), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class StageOne:
  """A frozen VQ-VAE run (`load_stage_one`) turning images into code indices and back."""

  run: Run
  layout: CodeLayout

  @property
  def fingerprint(self) -> str:
    return self.run.fingerprint

  @functools.cached_property
  def _replicated(self) -> Any:
    return parallel.replicate(self.run.variables)

  @functools.cached_property
  def _functions(self) -> dict:
    # one compile per StageOne (a model built from a saved config holds lists: it cannot key a cache)
    return {}

  def _batched(self, kind: str, inputs: np.ndarray, batch_size: int, out_dtype: Any) -> np.ndarray:
    """`kind` ("encode" or "decode") over inputs [N, ...] (`map_batches`)."""
    devices = tuple(jax.local_devices())
    if kind not in self._functions:
      self._functions[kind] = _pmapped(self.run.model, kind, devices)
    return map_batches(self._functions[kind], self._replicated, inputs, batch_size, out_dtype, devices)

  def encode_codes(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Images x [N, H, W, C] in the stage one's model range (its evaluation preprocessing) -> code indices
    int32 [N, *grid]."""
    return self._batched("encode", x, batch_size, np.int32)

  def decode_codes(self, indices: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Code indices int32 [N, *grid] (or flat token sequences [N, prod(grid)]) -> images float32
    [N, H, W, C] in the stage one's model range, through its decoder."""
    indices = np.asarray(indices, np.int32).reshape(-1, *self.layout.grid)
    if indices.size and (indices.min() < 0 or indices.max() >= self.layout.vocab_size):
      raise ConfigError(
        f"code indices must lie in [0, {self.layout.vocab_size}), got [{indices.min()}, {indices.max()}]"
      )
    return self._batched("decode", indices, batch_size, np.float32)

  def to_unit(self, images: np.ndarray) -> np.ndarray:
    """Images in the stage one's model range -> [0, 1] for display (`to_unit`)."""
    return to_unit(self.run.config, images)


def load_stage_one(workdir: str, step: int | None = None, best: bool = False) -> StageOne:
  """Restores a VQ-VAE run as a frozen tokenizer; DataNotFoundError when it has no checkpoint, ConfigError
  when its model has no discrete codes."""
  _, config = saved_config(workdir, step, best)
  layout = code_layout(config)  # checks the model before anything is restored
  return StageOne(load_run(workdir, step, best), layout)


def check_vocab(layout: CodeLayout, where: str) -> None:
  """ConfigError when the stage one's vocabulary is above MAX_VOCAB (a prior's single softmax)."""
  if layout.vocab_size > MAX_VOCAB:
    raise ConfigError(
      f"{where}: the stage one's {layout.quantizer} codes have a vocabulary of {layout.vocab_size:,} tokens, "
      f"above the {MAX_VOCAB:,} (2^16) a prior predicts directly; priors support vocabularies of at most "
      f"2^16 tokens: use fewer fsq levels (prod(fsq_levels) <= {MAX_VOCAB:,}), lfq code_dim <= 16 or "
      f"num_codes <= {MAX_VOCAB:,}"
    )


def flat_tokens(indices: np.ndarray) -> np.ndarray:
  """Code indices [N, *grid] -> token sequences int32 [N, prod(grid)] (raster order, stages innermost)."""
  indices = np.asarray(indices, np.int32)
  return indices.reshape(len(indices), -1)
