"""Post-training reports: reconstruction grids and the mean-image baseline a reconstruction must beat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from ae_jax import parallel, visualize
from ae_jax.data import DatasetInfo
from ae_jax.train import TrainState, apply_model


def stack_examples(source: Sequence, info: DatasetInfo, indices: Sequence[int]) -> dict[str, np.ndarray]:
  """source[i] for i in `indices`, preprocessed for evaluation, as one batch {"x": [n, ...], ...}."""
  preprocess = info.preprocess_for(train=False)
  examples = [preprocess(source[int(i)], int(i)) for i in indices]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def reconstruct(
  model: nn.Module, state: TrainState, x: np.ndarray, batch_size: int = 500
) -> dict[str, np.ndarray]:
  """The model's batch-first outputs for inputs x [n, ...] in evaluation mode (one device, no pmap),
  computed `batch_size` examples at a time with one jitted function (one compile: a short last chunk is
  padded with zeros, and its padding's outputs dropped).

  Outputs that are not batch-first (a VAE's sample-first [k, B] log-densities) are kept only when x fits
  in one batch.
  """

  def fn(s: TrainState, x: jax.Array) -> dict[str, jax.Array]:
    outputs = apply_model(model, s.params, s.model_state, {"x": x}, train=False, rng=s.rng)[0]
    outputs.pop("metrics", None)
    return outputs

  run = jax.jit(parallel.with_named_axis(fn))
  if len(x) <= batch_size:
    return jax.device_get(run(state, x))
  chunks, sizes = [], []
  for i in range(0, len(x), batch_size):
    chunk = np.asarray(x[i : i + batch_size])
    sizes.append(len(chunk))
    padding = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
    chunks.append(jax.device_get(run(state, np.concatenate([chunk, padding]))))
  batch_first = [k for k in chunks[0] if np.shape(chunks[0][k])[:1] == (batch_size,)]
  return {k: np.concatenate([c[k][:n] for c, n in zip(chunks, sizes, strict=True)]) for k in batch_first}


def save_reconstruction_grid(
  path: str, model: nn.Module, state: TrainState, source: Sequence, info: DatasetInfo, num: int = 16
) -> str:
  """PNG of the first `num` examples of `source` above their reconstructions; returns the path."""
  x = stack_examples(source, info, range(min(num, len(source))))["x"]
  recon = reconstruct(model, state, x)["recon"]
  return visualize.save_reconstructions(path, info.to_image(x), info.to_image(recon))


def save_prior_samples(
  path: str, model: nn.Module, state: TrainState, info: DatasetInfo, num: int = 64
) -> str:
  """PNG grid of E[x|z] for z ~ N(0, I) drawn from the state's key (models with the "generative" ability)."""
  variables = {"params": state.params, **state.model_state}
  z = jax.random.normal(jax.random.fold_in(state.rng, 0x5A), (num, model.latent_dim))
  generate = parallel.with_named_axis(lambda v, z: model.apply(v, z, method="generate"))
  images = jax.device_get(jax.jit(generate)(variables, z))
  return visualize.save_png(path, visualize.image_grid(info.to_image(images), ncols=8))


def latent_points(codes: np.ndarray) -> tuple[np.ndarray, str]:
  """2-D view of codes [N, D]: the codes themselves when D == 2, else their first two principal components."""
  codes = np.asarray(codes, np.float64).reshape(len(codes), -1)
  if codes.shape[1] == 2:
    return codes, "latent code"
  centred = codes - codes.mean(0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  explained = s[:2] ** 2 / np.sum(s**2)
  return centred @ vt[:2].T, f"first two principal components of the code ({explained.sum():.0%} of variance)"


def save_latent_scatter(
  path: str, model: nn.Module, state: TrainState, source: Sequence, info: DatasetInfo, num: int = 2000
) -> str:
  """Scatter PNG of the codes of the first `num` examples of `source`, coloured by label."""
  batch = stack_examples(source, info, range(min(num, len(source))))
  codes = reconstruct(model, state, batch["x"])["code"]
  points, title = latent_points(codes)
  return visualize.save_scatter(path, points, batch["label"], info.class_names, title)


def _chunks(source: Sequence, info: DatasetInfo, batch: int):
  """(x, weights) per chunk of `source`: weights broadcast a padding mask [n, T] (if any) over x's shape."""
  for start in range(0, len(source), batch):
    examples = stack_examples(source, info, range(start, min(start + batch, len(source))))
    x = examples["x"].astype(np.float64)
    mask = examples.get("mask", np.ones(x.shape[:1], np.float64)).astype(np.float64)
    yield x, np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape)


def mean_image_mse(train: Sequence, test: Sequence, info: DatasetInfo, batch: int = 5000) -> float:
  """Test MSE (model input space, per element) of always predicting the training set's mean example.

  With a padding mask, the mean and the error count real positions only, like the masked `mse` term.
  """
  sums = counts = 0.0
  for x, w in _chunks(train, info, batch):
    sums, counts = sums + (x * w).sum(0), counts + w.sum(0)
  mean = sums / np.maximum(counts, 1.0)
  sq = n = 0.0
  for x, w in _chunks(test, info, batch):
    sq, n = sq + float((np.square(x - mean) * w).sum()), n + float(w.sum())
  return sq / n


def summary_line(metrics: dict[str, Any]) -> str:
  return ", ".join(f"{k} {v:.5g}" for k, v in sorted(metrics.items()))
