"""numpy's Philox4x64-10 float32 uniforms, vectorised over a batch of keys, in numpy or jax.numpy.

Row j of `uniform_float32(keys, size)` is bitwise equal to
`np.random.Generator(np.random.Philox(key=keys[j])).random(size, dtype=np.float32)`, which is what
`ae_jax.data.images.binarize` draws per example; here one call serves the whole batch.

What numpy does (numpy/random/src/philox/philox.h, _philox.pyx, distributions.c):
- an integer key k is split into two 64-bit words, little-endian: key = (k mod 2**64, k >> 64);
- the 256-bit counter starts at 0 and is incremented before each block, so block b (0-based) encrypts
  the counter (b + 1, 0, 0, 0) and yields four uint64 words v0..v3;
- next_uint32 hands out each uint64 low half first, then high half: v0.lo, v0.hi, v1.lo, ..., v3.hi;
- next_float is (next_uint32 >> 8) * 2**-24.

The round logic (`philox4x64`) is written once over a word-arithmetic object: `Uint32Pairs` keeps
each 64-bit word as (hi, lo) uint32 arrays and builds the 64x64 -> 128-bit products from 16-bit pieces,
so it runs in jax.numpy with x64 disabled (jit-compatible); numpy uses `Uint64Words`, plain wrapping
uint64 arrays, which needs a quarter of the array operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROUNDS = 10
MULTIPLIERS = (0xD2E7470EE14C6C93, 0xCA5A826395121157)  # PHILOX_M4x64_0, PHILOX_M4x64_1
KEY_BUMPS = (0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B)  # PHILOX_W64_0, PHILOX_W64_1 (Weyl increments)
WORDS_PER_BLOCK = 8  # uint32 halves of the 4 uint64 outputs of one block
_MASK16, _MASK32 = 0xFFFF, 0xFFFFFFFF


class Uint32Pairs:
  """64-bit word arithmetic on (hi, lo) pairs of uint32 arrays of backend `xp` (numpy or jax.numpy):
  no uint64 anywhere, so it runs in jax with x64 disabled. uint32 ops wrap mod 2**32 in both."""

  def __init__(self, xp):
    self.xp = xp

  def word(self, hi, lo):
    """The word hi * 2**32 + lo from uint32 arrays."""
    return hi, lo

  def const(self, value: int):
    """A Python int in [0, 2**64) as a word."""
    return tuple(self.xp.asarray(v, dtype=self.xp.uint32) for v in (value >> 32, value & _MASK32))

  def halves(self, w):
    """(low, high) uint32 halves: the order in which numpy's next_uint32 hands out a uint64."""
    return w[1], w[0]

  def xor(self, a, b):
    return a[0] ^ b[0], a[1] ^ b[1]

  def add(self, a, b):
    """a + b mod 2**64."""
    lo = a[1] + b[1]
    return a[0] + b[0] + self._carry(lo, b[1]), lo

  def mulhilo(self, m, x):
    """The 128-bit product m * x as (high word, low word), from four 32x32 -> 64-bit products."""
    h0, w0 = self._mul32(x[1], m[1])
    h1, l1 = self._mul32(x[1], m[0])
    h2, l2 = self._mul32(x[0], m[1])
    h3, l3 = self._mul32(x[0], m[0])
    s = h0 + l1
    w1 = s + l2
    c1 = self._carry(s, l1) + self._carry(w1, l2)
    t = h1 + h2
    u = t + l3
    w2 = u + c1
    c2 = self._carry(t, h2) + self._carry(u, l3) + self._carry(w2, c1)
    return (h3 + c2, w2), (w1, w0)  # the top limb cannot wrap: m * x < 2**128

  def _carry(self, total, addend):
    """1 where the wrapped uint32 sum `total` = x + addend overflowed, else 0."""
    return (total < addend).astype(self.xp.uint32)

  @staticmethod
  def _mul32(a, b):
    """Full 32x32 -> 64-bit product of uint32 arrays as (hi, lo), from 16-bit pieces."""
    a0, a1, b0, b1 = a & _MASK16, a >> 16, b & _MASK16, b >> 16
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> 16) + (p01 & _MASK16) + (p10 & _MASK16)  # < 3 * 2**16: cannot wrap
    return a1 * b1 + (p01 >> 16) + (p10 >> 16) + (mid >> 16), a * b


class Uint64Words:
  """64-bit word arithmetic on numpy uint64 arrays (wrapping mod 2**64): a quarter of the array
  operations of Uint32Pairs, which in numpy would be slower than drawing key by key."""

  xp = np

  def word(self, hi, lo):
    return (hi.astype(np.uint64) << 32) | lo

  def const(self, value: int):
    return np.uint64(value)

  def halves(self, w):
    return (w & _MASK32).astype(np.uint32), (w >> 32).astype(np.uint32)

  def xor(self, a, b):
    return a ^ b

  def add(self, a, b):
    return a + b

  def mulhilo(self, m, x):
    """The 128-bit product m * x as (high word, low word), from 32-bit halves (numpy's _umul128 without
    __int128); in place where it can, which saves a third of the time."""
    m_lo, m_hi = np.uint64(int(m) & _MASK32), np.uint64(int(m) >> 32)
    x_lo, x_hi = x & np.uint64(_MASK32), x >> np.uint64(32)
    carry = x_lo * m_lo
    carry >>= np.uint64(32)
    mid = x_hi * m_lo
    carry += mid  # x_hi * m_lo + (x_lo * m_lo >> 32) < 2**64
    x_lo *= m_hi
    np.bitwise_and(carry, np.uint64(_MASK32), out=mid)
    mid += x_lo  # the middle 32-bit column, < 2**64
    carry >>= np.uint64(32)
    mid >>= np.uint64(32)
    x_hi *= m_hi
    x_hi += carry
    x_hi += mid
    return x_hi, x * m


def philox4x64(counter: tuple, key: tuple, ops: Uint32Pairs | Uint64Words) -> tuple:
  """Philox4x64-10 block function (Salmon et al. 2011, as in Random123 and numpy): encrypts a 256-bit
  counter of four 64-bit words under a 128-bit key of two, all broadcast together. Returns the four
  output words v0..v3."""
  m0, m1 = (ops.const(m) for m in MULTIPLIERS)
  bump0, bump1 = (ops.const(w) for w in KEY_BUMPS)

  def one_round(c, k):
    hi0, lo0 = ops.mulhilo(m0, c[0])
    hi1, lo1 = ops.mulhilo(m1, c[2])
    c = (ops.xor(ops.xor(hi1, c[1]), k[0]), lo1, ops.xor(ops.xor(hi0, c[3]), k[1]), lo0)
    return c, (ops.add(k[0], bump0), ops.add(k[1], bump1))  # the key after the last round is unused

  if ops.xp is np:
    for _ in range(ROUNDS):
      counter, key = one_round(counter, key)
    return counter
  import jax

  # A loop, not 10 unrolled rounds: XLA fuses those into one kernel that recomputes every shared
  # intermediate once per use, which took seconds per element on CPU.
  state = (counter, key)
  shape = np.broadcast_shapes(*(x.shape for x in jax.tree.leaves(state)))
  state = jax.tree.map(lambda x: ops.xp.broadcast_to(x, shape), state)
  return jax.lax.fori_loop(0, ROUNDS, lambda _, s: one_round(*s), state)[0]


def key_words(keys, xp=np) -> tuple[Any, Any]:
  """Integer keys [n] -> the (hi, lo) uint32 halves [n] of their low 64-bit key word.

  keys: an integer array of backend `xp`, each in [0, 2**64), numpy's Philox key (its high key word is
  then 0); negative keys are refused for numpy arrays (a traced jax array cannot be checked).
  32-bit dtypes (jax without x64) give hi = 0; int64/uint64 are split.
  """
  keys = xp.asarray(keys)
  if keys.ndim != 1:
    raise ValueError(f"Philox keys must be one-dimensional [n], got shape {keys.shape}")
  if not xp.issubdtype(keys.dtype, xp.integer):
    raise TypeError(f"Philox keys must be integers, got dtype {keys.dtype}")
  if isinstance(keys, np.ndarray) and keys.size and np.issubdtype(keys.dtype, np.signedinteger):
    if keys.min() < 0:
      raise ValueError(f"Philox keys must be non-negative, got {keys.min()}")
  if keys.dtype.itemsize < 8:
    return xp.zeros(keys.shape, xp.uint32), keys.astype(xp.uint32)
  return (keys >> 32).astype(xp.uint32), (keys & _MASK32).astype(xp.uint32)


def random_uint32(keys, count: int, xp=np):
  """The first `count` next_uint32 draws of numpy's Philox(key=k) for each key: uint32 [n, count].

  keys: as in `uniform_float32`. count: a static Python int.
  """
  if not 0 <= count < WORDS_PER_BLOCK * _MASK32:  # block b + 1 must fit in the counter's low 32 bits
    raise ValueError(f"count must be in [0, {WORDS_PER_BLOCK * _MASK32}), got {count}")
  hi, lo = keys if isinstance(keys, tuple) else key_words(keys, xp)
  hi, lo = (xp.asarray(w, dtype=xp.uint32)[:, None] for w in (hi, lo))  # [n, 1] against blocks [1, B]
  n, blocks = hi.shape[0], -(-count // WORDS_PER_BLOCK)
  ops = Uint64Words() if xp is np else Uint32Pairs(xp)
  zero = ops.word(*(xp.zeros((1, blocks), xp.uint32),) * 2)
  first = ops.word(xp.zeros((1, blocks), xp.uint32), xp.arange(1, blocks + 1, dtype=xp.uint32)[None, :])
  out = philox4x64((first, zero, zero, zero), (ops.word(hi, lo), zero), ops)
  halves = [xp.broadcast_to(half, (n, blocks)) for word in out for half in ops.halves(word)]
  return xp.stack(halves, axis=-1).reshape(n, blocks * WORDS_PER_BLOCK)[:, :count]


def uniform_float32(keys, size: int, xp=np):
  """float32 [n, size] in [0, 1): row j bitwise equal to
  `np.random.Generator(np.random.Philox(key=k_j)).random(size, dtype=np.float32)`.

  keys: integer keys [n] in [0, 2**64) (see `key_words`), or their (hi, lo) uint32 halves [n] as a
  tuple -- the way to pass keys >= 2**31 to jax with x64 disabled (split on the host by `key_words`).
  size: a static Python int. xp: numpy or jax.numpy; with jax.numpy it is jit-compatible.
  """
  draws = random_uint32(keys, size, xp)
  return (draws >> 8).astype(xp.float32) * xp.float32(2.0**-24)  # exact: < 2**24 times a power of 2


def binarize_batch(images, keys, xp=np):
  """Dynamic binarisation of a batch: uint8 images [n, ...] -> float32 {0, 1} of the same shape,
  bitwise equal to stacking `ae_jax.data.images.binarize(images[j], keys[j])`.

  keys: as in `uniform_float32`. Pixel p is kept where u * 255 < p, compared in float32 (numpy's
  promotion of the float32 product against uint8 is exactly this).
  """
  images = xp.asarray(images)
  size = int(np.prod(images.shape[1:]))
  u = uniform_float32(keys, size, xp).reshape(images.shape)
  return (u * xp.float32(255.0) < images.astype(xp.float32)).astype(xp.float32)
