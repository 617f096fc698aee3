"""Full-reference image-quality metrics: PSNR and SSIM, per example, in pure JAX.

All functions take two batches of images `x` and `y` of the same shape with a leading batch axis (NHWC,
`[B, H, W, C]`, for SSIM), return one value per example (shape `[B]`, float32), are pure, and work under
`jax.jit` and `jax.vmap`. Computation is in float32 whatever the input dtype (bfloat16 inputs are upcast).
`data_range` is the difference between the largest and smallest possible pixel values: 1.0 for images in
[0, 1], 255.0 for 8-bit images kept in [0, 255].

Definitions, for one example with N pixel values (all positions and channels):

* MSE = (1 / N) * sum (x - y)^2.
* PSNR = 10 * log10(data_range^2 / MSE), in decibels. Identical images have MSE = 0 and PSNR = +inf, so a
  mean of PSNRs over a data set is +inf as soon as one reconstruction is exact; average finite values, clip,
  or average the MSE and convert afterwards (`10 * log10(data_range^2 / mean_mse)`) where that matters.
* SSIM (Wang, Bovik, Sheikh and Simoncelli, 2004), per channel: with Gaussian-weighted local statistics
  (weights w, standard deviation `sigma`, radius int(3.5 * sigma + 0.5), i.e. 11 taps for sigma = 1.5,
  normalised to sum to 1, applied separably along H and W with symmetric ("reflect") borders)

      mu_x = w * x,   var_x = w * x^2 - mu_x^2,   cov_xy = w * (x y) - mu_x mu_y,
      C1 = (k1 * data_range)^2,   C2 = (k2 * data_range)^2,
      S = (2 mu_x mu_y + C1) (2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (var_x + var_y + C2)),

  the variances being population ones (no N / (N - 1) factor). The SSIM of an example is the mean of the
  map S over channels and over the pixels left after cropping (win_size - 1) // 2 pixels at every border,
  so the filter's border handling only matters when the Gaussian radius exceeds that crop. This is exactly
  `skimage.metrics.structural_similarity(a, b, data_range=data_range, channel_axis=-1,
  gaussian_weights=True, sigma=sigma, use_sample_covariance=False)` for each example `a`, `b` (scikit-image
  computes in float64; the float32 results here agree to about 1e-6). SSIM lies in [-1, 1] and equals 1 for
  identical images.

Example::

  >>> import jax, jax.numpy as jnp
  >>> x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  >>> y = jnp.clip(x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), 0.0, 1.0)
  >>> psnr(x, y).shape, ssim(x, y).shape
  ((2,), (2,))
  >>> round(float(ssim(x, x)[0]), 6), float(psnr(x, x)[0])
  (1.0, inf)
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["mse", "psnr", "ssim", "ssim_window_size"]

_TRUNCATE = 3.5


def _check_pair(x: jax.Array, y: jax.Array, name: str) -> tuple[jax.Array, jax.Array]:
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.shape != y.shape:
    raise ValueError(f"{name}: x and y must have the same shape, got {x.shape} and {y.shape}")
  if x.ndim < 1:
    raise ValueError(f"{name}: inputs need a leading batch axis, got shape {x.shape}")
  return x.astype(jnp.float32), y.astype(jnp.float32)


def _check_data_range(data_range: float | jax.Array, name: str) -> None:
  if isinstance(data_range, numbers.Real) and not data_range > 0:
    raise ValueError(f"{name}: data_range must be positive, got {data_range}")


def mse(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example mean squared error.

  Args:
    x, y: arrays of the same shape `[B, ...]` (e.g. NHWC images), any real dtype.

  Returns:
    `[B]` float32: the mean of (x - y)^2 over all non-batch axes, in squared pixel units.
  """
  x, y = _check_pair(x, y, "mse")
  return jnp.square(x - y).reshape(x.shape[0], -1).mean(axis=1)


def psnr(x: jax.Array, y: jax.Array, data_range: float | jax.Array = 1.0) -> jax.Array:
  """Per-example peak signal-to-noise ratio, 10 * log10(data_range^2 / MSE).

  Args:
    x, y: arrays of the same shape `[B, ...]` (e.g. NHWC images), any real dtype; symmetric in x and y.
    data_range: max minus min possible pixel value (1.0 for [0, 1] images, 255.0 for [0, 255]).

  Returns:
    `[B]` float32, in decibels. An example with x == y has MSE 0 and PSNR +inf (not NaN), so filter or clip
    before averaging over examples if infinities are unwanted.
  """
  _check_data_range(data_range, "psnr")
  err = mse(x, y)
  return 10.0 * jnp.log10(jnp.square(jnp.asarray(data_range, jnp.float32)) / err)


def ssim_window_size(sigma: float = 1.5) -> int:
  """Side of the Gaussian window used by `ssim` for `sigma`: 2 * int(3.5 * sigma + 0.5) + 1 (11 for 1.5)."""
  return 2 * int(_TRUNCATE * sigma + 0.5) + 1


def _gaussian_taps(sigma: float) -> np.ndarray:
  radius = int(_TRUNCATE * sigma + 0.5)
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (t / sigma) ** 2)
  return (w / w.sum()).astype(np.float32)


def _gaussian_filter_valid(maps: jax.Array, taps: np.ndarray) -> jax.Array:
  """Separable depthwise Gaussian filter of `maps` [B, H, W, K] without padding: [B, H - 2r, W - 2r, K]."""
  k = maps.shape[-1]
  n = taps.shape[0]
  dims = ("NHWC", "HWIO", "NHWC")
  for shape in ((n, 1, 1, 1), (1, n, 1, 1)):
    kernel = jnp.broadcast_to(jnp.asarray(taps).reshape(shape), shape[:3] + (k,))
    maps = lax.conv_general_dilated(
      maps,
      kernel,
      window_strides=(1, 1),
      padding="VALID",
      dimension_numbers=dims,
      feature_group_count=k,
      precision=lax.Precision.HIGHEST,
    )
  return maps


def ssim(
  x: jax.Array,
  y: jax.Array,
  data_range: float | jax.Array = 1.0,
  *,
  sigma: float = 1.5,
  win_size: int | None = None,
  k1: float = 0.01,
  k2: float = 0.03,
) -> jax.Array:
  """Per-example structural similarity with a Gaussian window (Wang et al. 2004), as scikit-image.

  Args:
    x, y: NHWC images `[B, H, W, C]` of the same shape, any real dtype (computed in float32).
      H and W must be at least `win_size`.
    data_range: max minus min possible pixel value (1.0 for [0, 1] images, 255.0 for [0, 255]).
    sigma: standard deviation of the Gaussian weights, in pixels; the filter has radius
      int(3.5 * sigma + 0.5). A Python number (static under `jax.jit`), as is `win_size`.
    win_size: odd window side that sets the border crop, (win_size - 1) // 2 pixels per side, and the
      minimum image size; defaults to the filter's own size, `ssim_window_size(sigma)` (11 for sigma 1.5),
      as in scikit-image.
    k1, k2: stabilising constants; C1 = (k1 * data_range)^2, C2 = (k2 * data_range)^2.

  Returns:
    `[B]` float32 SSIM in [-1, 1] (1 for identical images), the mean of the SSIM map over channels and the
    cropped pixels; symmetric in x and y. Equal to `skimage.metrics.structural_similarity(x[i], y[i],
    data_range=data_range, channel_axis=-1, gaussian_weights=True, sigma=sigma, win_size=win_size,
    use_sample_covariance=False, K1=k1, K2=k2)` for every i, up to float32 rounding.

  Raises:
    ValueError: for inputs that are not NHWC of equal shape, images smaller than `win_size` x `win_size`, an
      even `win_size`, or a non-positive `sigma` or `data_range`.
  """
  if not sigma > 0:
    raise ValueError(f"ssim: sigma must be positive, got {sigma}")
  if any(isinstance(k, numbers.Real) and k < 0 for k in (k1, k2)):
    raise ValueError(f"ssim: k1 and k2 must be non-negative, got {k1} and {k2}")
  if win_size is None:
    win_size = ssim_window_size(sigma)
  if win_size < 1 or win_size % 2 != 1:
    raise ValueError(f"ssim: win_size must be a positive odd integer, got {win_size}")
  _check_data_range(data_range, "ssim")
  x, y = _check_pair(x, y, "ssim")
  if x.ndim != 4:
    raise ValueError(f"ssim: expected NHWC images [B, H, W, C], got shape {x.shape}")
  _, h, w, _ = x.shape
  if h < win_size or w < win_size:
    raise ValueError(
      f"ssim: images must be at least {win_size}x{win_size} pixels (win_size={win_size}, sigma={sigma}), "
      f"got {h}x{w}"
    )

  taps = _gaussian_taps(sigma)
  radius = (taps.shape[0] - 1) // 2
  crop = (win_size - 1) // 2
  # Local variances are shift-invariant: take them about a per-image constant to limit float32 cancellation.
  shift = lax.stop_gradient(0.5 * (x.mean(axis=(1, 2), keepdims=True) + y.mean(axis=(1, 2), keepdims=True)))
  xc, yc = x - shift, y - shift
  maps = jnp.concatenate([xc, yc, xc * xc, yc * yc, xc * yc], axis=-1)
  if radius > crop:
    extra = radius - crop
    maps = jnp.pad(maps, ((0, 0), (extra, extra), (extra, extra), (0, 0)), mode="symmetric")
  stats = _gaussian_filter_valid(maps, taps)
  if crop > radius:
    extra = crop - radius
    stats = stats[:, extra:-extra, extra:-extra, :]
  mxc, myc, mxx, myy, mxy = jnp.split(stats, 5, axis=-1)
  var_x = mxx - mxc * mxc
  var_y = myy - myc * myc
  cov_xy = mxy - mxc * myc
  mu_x, mu_y = mxc + shift, myc + shift

  r = jnp.asarray(data_range, jnp.float32)
  c1 = jnp.square(k1 * r)
  c2 = jnp.square(k2 * r)
  num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
  den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
  return (num / den).mean(axis=(1, 2, 3))
