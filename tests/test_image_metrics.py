"""PSNR and SSIM against scikit-image's float64 reference implementations, under jax.jit."""

from __future__ import annotations

import doctest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax.metrics import image_metrics

skm = pytest.importorskip("skimage.metrics")

SSIM_ATOL = 1e-5
PSNR_ATOL = 1e-4  # dB
# bfloat16 inputs (8-bit mantissa, spacing 2^-8 in [0.5, 1)) against the same images in float32:
BF16_SSIM_ATOL = 1e-3
BF16_PSNR_RTOL = 0.02  # about 0.6 dB at 50 dB, where the rounding is as large as the noise

ssim_jit = jax.jit(image_metrics.ssim, static_argnames=("sigma", "win_size"))
psnr_jit = jax.jit(image_metrics.psnr)


def sk_ssim(x: np.ndarray, y: np.ndarray, data_range: float, **kwargs) -> np.ndarray:
  kwargs = {"sigma": 1.5, **kwargs}
  return np.array(
    [
      skm.structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        data_range=data_range,
        channel_axis=-1,
        gaussian_weights=True,
        use_sample_covariance=False,
        **kwargs,
      )
      for a, b in zip(x, y, strict=True)
    ]
  )


def sk_psnr(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
  return np.array(
    [
      skm.peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=data_range)
      for a, b in zip(x, y, strict=True)
    ]
  )


def random_pair(shape, data_range: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, data_range, size=shape).astype(np.float32)
  y = rng.uniform(0.0, data_range, size=shape).astype(np.float32)
  return x, y


def structured_pair(shape, data_range: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Smooth sinusoidal images, and copies with per-example noise levels from 0.3% to 100% of the range."""
  b, h, w, c = shape
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[0:h, 0:w] / max(h, w)
  freq = rng.uniform(1.0, 5.0, size=(b, 1, 1, c, 2))
  phase = rng.uniform(0.0, 2 * np.pi, size=(b, 1, 1, c))
  arg = 2 * np.pi * (freq[..., 0] * cols[None, :, :, None] + freq[..., 1] * rows[None, :, :, None]) + phase
  x = 0.5 + 0.4 * np.sin(arg)
  noise = np.geomspace(0.003, 1.0, b)[:, None, None, None]
  y = np.clip(x + noise * rng.standard_normal(x.shape), 0.0, 1.0)
  return (data_range * x).astype(np.float32), (data_range * y).astype(np.float32)


CASES = [
  pytest.param((3, 23, 37, 1), 1.0, id="gray-23x37-range1"),
  pytest.param((3, 23, 37, 1), 255.0, id="gray-23x37-range255"),
  pytest.param((2, 16, 20, 3), 1.0, id="rgb-16x20-range1"),
  pytest.param((2, 11, 11, 3), 255.0, id="rgb-11x11-range255"),
]


@pytest.mark.parametrize("shape,data_range", CASES)
def test_ssim_random_images_match_skimage(shape, data_range):
  x, y = random_pair(shape, data_range)
  got = ssim_jit(x, y, data_range)
  chex.assert_shape(got, (shape[0],))
  chex.assert_type(got, jnp.float32)
  chex.assert_trees_all_close(got, sk_ssim(x, y, data_range).astype(np.float32), atol=SSIM_ATOL, rtol=0)


@pytest.mark.parametrize(
  "shape,data_range",
  [
    pytest.param((6, 23, 37, 1), 1.0, id="gray-23x37-range1"),
    pytest.param((6, 32, 32, 3), 255.0, id="rgb-32x32-range255"),
  ],
)
def test_ssim_structured_images_match_skimage_per_example(shape, data_range):
  x, y = structured_pair(shape, data_range)
  ref = sk_ssim(x, y, data_range)
  assert ref.min() < 0.4 and ref.max() > 0.99, ref
  got = ssim_jit(x, y, data_range)
  chex.assert_trees_all_close(got, ref.astype(np.float32), atol=SSIM_ATOL, rtol=0)
  for i in range(shape[0]):
    single = ssim_jit(x[i : i + 1], y[i : i + 1], data_range)
    chex.assert_trees_all_close(single[0], got[i], atol=2e-6, rtol=0)  # float32: a batch vs one image


def test_ssim_bright_low_contrast_images_match_skimage():
  rng = np.random.default_rng(3)
  x = (0.95 + 0.003 * rng.standard_normal((2, 24, 24, 3))).astype(np.float32)
  y = (x + 0.003 * rng.standard_normal(x.shape)).astype(np.float32)
  chex.assert_trees_all_close(ssim_jit(x, y, 1.0), sk_ssim(x, y, 1.0).astype(np.float32), atol=SSIM_ATOL)


@pytest.mark.parametrize(
  "shape,sigma,win_size",
  [
    pytest.param((2, 7, 9, 2), 3.0, 7, id="radius-beyond-crop-and-image"),
    pytest.param((2, 13, 15, 2), 1.0, 13, id="crop-beyond-radius"),
    pytest.param((2, 15, 16, 1), 2.0, None, id="window-from-sigma"),
  ],
)
def test_ssim_other_windows_match_skimage(shape, sigma, win_size):
  x, y = structured_pair(shape, 1.0, seed=1)
  ref = sk_ssim(x, y, 1.0, sigma=sigma, win_size=win_size)
  got = ssim_jit(x, y, 1.0, sigma=sigma, win_size=win_size)
  chex.assert_trees_all_close(got, ref.astype(np.float32), atol=SSIM_ATOL, rtol=0)


@pytest.mark.parametrize("shape,data_range", CASES)
def test_psnr_and_mse_match_skimage(shape, data_range):
  x, y = structured_pair(shape, data_range)
  got = psnr_jit(x, y, data_range)
  chex.assert_shape(got, (shape[0],))
  chex.assert_type(got, jnp.float32)
  chex.assert_trees_all_close(got, sk_psnr(x, y, data_range).astype(np.float32), atol=PSNR_ATOL, rtol=0)
  expected_mse = np.mean((x.astype(np.float64) - y) ** 2, axis=(1, 2, 3))
  chex.assert_trees_all_close(image_metrics.mse(x, y), expected_mse.astype(np.float32), rtol=1e-5)


def test_identical_images():
  x, _ = structured_pair((3, 23, 37, 3), 255.0)
  chex.assert_trees_all_close(ssim_jit(x, x, 255.0), np.ones(3, np.float32), atol=1e-6, rtol=0)
  p = psnr_jit(x, x, 255.0)
  assert np.all(np.isposinf(p)), p
  y = x.copy()
  y[1] += 1.0
  mixed = psnr_jit(x, y, 255.0)
  assert np.isposinf(mixed[0]) and np.isfinite(mixed[1]) and np.isposinf(mixed[2]), mixed


def test_symmetry():
  x, y = structured_pair((4, 23, 37, 3), 1.0)
  chex.assert_trees_all_close(ssim_jit(x, y, 1.0), ssim_jit(y, x, 1.0), atol=1e-7, rtol=0)
  chex.assert_trees_all_close(psnr_jit(x, y, 1.0), psnr_jit(y, x, 1.0), atol=1e-6, rtol=0)


def test_bfloat16_inputs_computed_in_float32():
  x, y = structured_pair((4, 23, 37, 3), 1.0)
  xb, yb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)
  got = ssim_jit(xb, yb, 1.0)
  chex.assert_type(got, jnp.float32)
  upcast = ssim_jit(xb.astype(jnp.float32), yb.astype(jnp.float32), 1.0)
  chex.assert_trees_all_close(got, upcast, atol=1e-7, rtol=0)
  chex.assert_trees_all_close(got, ssim_jit(x, y, 1.0), atol=BF16_SSIM_ATOL, rtol=0)
  p = psnr_jit(xb, yb, 1.0)
  chex.assert_type(p, jnp.float32)
  chex.assert_trees_all_close(p, psnr_jit(xb.astype(jnp.float32), yb.astype(jnp.float32), 1.0), atol=1e-6)
  chex.assert_trees_all_close(p, psnr_jit(x, y, 1.0), rtol=BF16_PSNR_RTOL, atol=0)


def test_vmap_and_traced_data_range():
  x, y = structured_pair((6, 16, 16, 2), 255.0)
  flat = ssim_jit(x, y, 255.0)
  stacked = jax.vmap(image_metrics.ssim, in_axes=(0, 0, None))(
    x.reshape(2, 3, 16, 16, 2), y.reshape(2, 3, 16, 16, 2), 255.0
  )
  chex.assert_trees_all_close(stacked.reshape(-1), flat, atol=1e-6, rtol=0)
  stacked_psnr = jax.vmap(image_metrics.psnr, in_axes=(0, 0, None))(
    x.reshape(2, 3, 16, 16, 2), y.reshape(2, 3, 16, 16, 2), 255.0
  )
  chex.assert_trees_all_close(stacked_psnr.reshape(-1), psnr_jit(x, y, 255.0), atol=1e-5, rtol=0)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def both(a, b, r):
    return image_metrics.ssim(a, b, r), image_metrics.psnr(a, b, r)

  s255, p255 = both(x, y, 255.0)
  s1, p1 = both(x / 255.0, y / 255.0, 1.0)
  chex.assert_trees_all_close(s1, s255, atol=1e-5, rtol=0)
  chex.assert_trees_all_close(p1, p255, atol=1e-3, rtol=0)


def test_invalid_inputs():
  small = np.zeros((2, 10, 30, 1), np.float32)
  with pytest.raises(ValueError, match="at least 11x11"):
    image_metrics.ssim(small, small)
  with pytest.raises(ValueError, match="at least 15x15"):
    image_metrics.ssim(np.zeros((1, 14, 14, 1)), np.zeros((1, 14, 14, 1)), sigma=2.0)
  ok = np.zeros((2, 12, 12, 1), np.float32)
  with pytest.raises(ValueError, match="odd"):
    image_metrics.ssim(ok, ok, win_size=10)
  with pytest.raises(ValueError, match="same shape"):
    image_metrics.ssim(ok, ok[:1])
  with pytest.raises(ValueError, match="NHWC"):
    image_metrics.ssim(ok[..., 0], ok[..., 0])
  with pytest.raises(ValueError, match="data_range"):
    image_metrics.psnr(ok, ok, data_range=0.0)


def test_module_docstring_example():
  result = doctest.testmod(image_metrics, verbose=False)
  assert result.attempted > 0 and result.failed == 0, result
