"""Nearest-neighbour distances between windows of a series: the matrix profile and its AB-join (JAX).

For every query window (a subsequence of `m` points) the distance to its nearest reference window,
leaving out trivial matches (reference windows that start fewer than `exclusion` points away, i.e. that
overlap it). Distances are z-normalised Euclidean by default (Yeh et al. 2016, as STUMPY computes them):
d^2 = 2 m (1 - corr), corr the Pearson correlation of the two windows; a constant window is at distance 0
from another constant window and sqrt(m) from any other (STUMPY's convention), so a flat segment in a
varying series stands out. `normalise=False` gives the plain Euclidean distance. The largest values are
discords. Computed blockwise as matrix products of the standardised windows in float32 (the windows are
standardised in float64 first, so a large offset costs no precision).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_BLOCK = 512  # query windows per matrix product: [512, references] float32 per block


def sliding_windows(values: np.ndarray, m: int) -> np.ndarray:
  """All windows [n - m + 1, m] of values [n] (a view)."""
  return np.lib.stride_tricks.sliding_window_view(np.asarray(values, np.float64), m)


def _standardise(w: np.ndarray, normalise: bool) -> tuple[np.ndarray, np.ndarray]:
  """(rows [W, m] float32, constant [W] bool): z-normalised rows (constant rows zero) or, without
  `normalise`, the rows less the series' overall mean."""
  if not normalise:
    return (w - w.mean()).astype(np.float32), np.zeros(len(w), bool)
  mean, std = w.mean(axis=1, keepdims=True), w.std(axis=1, keepdims=True)
  constant = std[:, 0] <= 1e-8 * max(float(np.abs(w).max()), 1.0)
  return np.where(constant[:, None], 0.0, (w - mean) / np.where(constant[:, None], 1.0, std)).astype(
    np.float32
  ), constant


@functools.partial(jax.jit, static_argnames=("normalise", "left"))
def _block_min(q, q_const, q_start, r, r_const, r_start, exclusion, normalise: bool, left: bool):
  """Squared distance of each query row [B, m] to its nearest allowed reference row [R, m]: [B]."""
  m = q.shape[1]
  dots = q @ r.T
  if normalise:
    d2 = 2.0 * m - 2.0 * dots
    d2 = jnp.where(q_const[:, None] | r_const[None, :], float(m), d2)
    d2 = jnp.where(q_const[:, None] & r_const[None, :], 0.0, d2)
  else:
    d2 = jnp.sum(q * q, 1)[:, None] + jnp.sum(r * r, 1)[None, :] - 2.0 * dots
  trivial = jnp.abs(q_start[:, None] - r_start[None, :]) < exclusion
  if left:  # only windows that start before the query (and do not overlap it by more than allowed)
    trivial = trivial | (r_start[None, :] > q_start[:, None])
  return jnp.min(jnp.where(trivial, jnp.inf, jnp.maximum(d2, 0.0)), axis=1)


def nearest_distances(
  values: np.ndarray,
  m: int,
  query: tuple[int, int] | None = None,
  reference: tuple[int, int] | None = None,
  exclusion: int | None = None,
  normalise: bool = True,
  left: bool = False,
) -> np.ndarray:
  """Distance of each query window to its nearest reference window: [q_hi - q_lo] (float64).

  values [n]; windows of `m` points are named by their start. `query` and `reference` are half-open
  ranges of window starts (default: all n - m + 1 windows, the self-join matrix profile). Reference windows
  that start fewer than `exclusion` points (default ceil(m / 4), STUMPY's) from a query window are left
  out; a query window without any allowed reference gets inf. `left`: only reference windows that start
  before the query window count (the left matrix profile: a window's distance to the past, which a
  repeated anomaly after it cannot hide; Lu et al. 2022, DAMP).
  """
  w = sliding_windows(values, m)
  q_lo, q_hi = query if query is not None else (0, len(w))
  r_lo, r_hi = reference if reference is not None else (0, len(w))
  if not (0 <= q_lo < q_hi <= len(w) and 0 <= r_lo < r_hi <= len(w)):
    raise ValueError(f"window ranges {query} / {reference} must lie in [0, {len(w)}] for m={m}")
  exclusion = -(-m // 4) if exclusion is None else exclusion
  rows, constant = _standardise(w, normalise)
  r, r_const = jnp.asarray(rows[r_lo:r_hi]), jnp.asarray(constant[r_lo:r_hi])
  r_start = jnp.arange(r_lo, r_hi)
  out = []
  for lo in range(q_lo, q_hi, _BLOCK):
    hi = min(lo + _BLOCK, q_hi)
    pad = _BLOCK - (hi - lo)  # one compiled shape for every block
    q = np.pad(rows[lo:hi], ((0, pad), (0, 0)))
    qc = np.pad(constant[lo:hi], (0, pad))
    d2 = _block_min(q, qc, jnp.arange(lo, lo + _BLOCK), r, r_const, r_start, exclusion, normalise, left)
    out.append(np.asarray(d2)[: hi - lo])
  return np.sqrt(np.concatenate(out).astype(np.float64))
