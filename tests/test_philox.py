"""ae_jax.data.philox against numpy's own Philox generator and the per-example binarize, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax.data import philox
from ae_jax.data.images import binarize

EDGE_KEYS = [0, 1, 2**32 - 1, 2**32, 2**62 + 12345, 2**63 - 1]
SIZES = [1, 3, 4, 7, 8, 9, 784]  # odd sizes end mid-uint64, 8 is one block, 9 starts the second


def _keys() -> np.ndarray:
  rng = np.random.default_rng(0)
  return np.concatenate([np.array(EDGE_KEYS), rng.integers(0, 2**63 - 1, 10)]).astype(np.int64)


def _reference(keys, size: int) -> np.ndarray:
  rows = [np.random.Generator(np.random.Philox(key=int(k))).random(size, dtype=np.float32) for k in keys]
  return np.stack(rows)


def _assert_bits_equal(got, want) -> None:
  got = np.asarray(got)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("size", SIZES)
def test_numpy_backend_matches_numpy_philox(size):
  keys = _keys()
  want = _reference(keys, size)
  _assert_bits_equal(philox.uniform_float32(keys, size), want)
  top = np.array([2**64 - 1], np.uint64)  # only a uint64 array holds it
  _assert_bits_equal(philox.uniform_float32(top, size), _reference(top, size))


@pytest.mark.parametrize("size", SIZES)
def test_jax_backend_under_jit_matches_numpy_philox(size):
  keys = _keys()
  hi, lo = philox.key_words(keys)
  draw = jax.jit(lambda h, lo: philox.uniform_float32((h, lo), size, jnp))
  _assert_bits_equal(draw(jnp.asarray(hi), jnp.asarray(lo)), _reference(keys, size))


def test_jax_backend_takes_int32_keys():
  keys = np.array([0, 5, 2**31 - 1, 123456789], np.int32)
  draw = jax.jit(lambda k: philox.uniform_float32(k, 13, jnp))
  _assert_bits_equal(draw(jnp.asarray(keys)), _reference(keys, 13))


@pytest.mark.parametrize(
  "ops",
  [philox.Uint64Words(), philox.Uint32Pairs(np), philox.Uint32Pairs(jnp)],
  ids=["u64", "pairs-np", "pairs-jax"],
)
def test_mulhilo_is_the_exact_128_bit_product(ops):
  rng = np.random.default_rng(1)
  edge = [0, 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64 - 2**32, 0xFFFFFFFF00000001]
  xs = edge + [int(v) for v in rng.integers(0, 2**64 - 1, 50, dtype=np.uint64)]
  hi, lo = (
    ops.xp.asarray([f(v) for v in xs], dtype=ops.xp.uint32)
    for f in (lambda v: v >> 32, lambda v: v & 0xFFFFFFFF)
  )
  for m in philox.MULTIPLIERS + (2**64 - 1,):
    words = ops.mulhilo(ops.const(m), ops.word(hi, lo))
    halves = [np.asarray(h).astype(object) for w in words for h in ops.halves(w)]  # lo, hi of high; of low
    got = (halves[1] << 96) | (halves[0] << 64) | (halves[3] << 32) | halves[2]
    assert list(got) == [m * v for v in xs]


def _images(n: int, shape) -> np.ndarray:
  images = np.random.default_rng(2).integers(0, 256, (n, *shape)).astype(np.uint8)
  images[0] = 0
  images[1] = 255
  return images


@pytest.mark.parametrize("shape", [(28, 28, 1), (3, 5, 1), (2, 3, 3)])
def test_binarize_batch_equals_per_example_binarize(shape):
  images = _images(8, shape)
  keys = np.array([0, 1, 7, 2**32, 2**62 + 12345, 99, 100, 2**40 + 3], np.int64)
  want = np.stack([binarize(image, int(k)) for image, k in zip(images, keys, strict=True)])
  assert want[0].sum() == 0 and want[1].all()
  _assert_bits_equal(philox.binarize_batch(images, keys), want)
  hi, lo = philox.key_words(keys)
  jitted = jax.jit(lambda im, h, lo: philox.binarize_batch(im, (h, lo), jnp))
  _assert_bits_equal(jitted(jnp.asarray(images), jnp.asarray(hi), jnp.asarray(lo)), want)


def test_bad_keys_are_rejected():
  with pytest.raises(ValueError, match="non-negative"):
    philox.uniform_float32(np.array([3, -1]), 4)
  with pytest.raises(ValueError, match="one-dimensional"):
    philox.uniform_float32(np.int64(3), 4)
  with pytest.raises(TypeError, match="integers"):
    philox.uniform_float32(np.array([0.5]), 4)
