"""A gated PixelCNN prior over a VQ-VAE's code grid (the VQ-VAE paper's second stage; van den Oord et al.
2016, "Conditional Image Generation with PixelCNN Decoders").

p(x) = prod_t p(x_t | x_<t) over the h x w code grid in raster order, like `ar_prior`, but computed by
convolutions: a vertical stack sees the rows above a position, a horizontal stack the positions to its
left in its row, and the vertical stack feeds the horizontal one, so there is no blind spot. Masked
kernels make the first layer exclude the position itself ("A") and the later ones include their input
at that position ("B"), which depends only on earlier positions; so logits[:, t] depends only on
tokens[:, :t] (tested). Each layer is gated, tanh(a) * sigmoid(b), with a per-class bias in both stacks
when class-conditional (`num_classes > 0`; `class_dropout` p > 0 adds a null class, trained in place of
the label with probability p, for classifier-free guidance); the horizontal stack is residual after the
first layer. A 1x1 head gives logits over the K codes, in float32 whatever the compute dtype.

    x [B, L] int32 (L = h * w) -> {"logits" [B, L, K] float32, "code_nll" [B] nats, "metrics":
    {"bits_per_code"}}

`grid` is the stage one's code grid (h, w), set by experiments/configs/prior_pixelcnn.py; a residual VQ's
grid x stages (several tokens per position) is refused: `ar_prior` models it. Sampling is position by
position through `sample_autoregressive` (L forward passes), row by row: the positions of row i run the
network over the first i + 1 rows only (nothing reads a later row): (h + 1) / 2h of the FLOPs, though
not of the time on a CPU, where a pass's cost hardly follows its size (docs/generation.md measures it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ae_jax.core.errors import ConfigError
from ae_jax.generation.code_priors import Autoregressive
from ae_jax.generation.transformer import (
  check_class_dropout,
  check_guidance,
  check_labels,
  check_tokens,
  drop_labels,
  sample_autoregressive,
  with_guidance,
)
from ae_jax.models import interface


def _gate(x: jax.Array) -> jax.Array:
  a, b = jnp.split(x, 2, axis=-1)
  return jnp.tanh(a) * nn.sigmoid(b)


class GatedLayer(nn.Module):
  """One gated layer: (vertical [B, h, w, C], horizontal [B, h, w, C], class bias [B, 2C] or None) ->
  the next (vertical, horizontal). `first`: the "A" masks (the position itself excluded), no residual."""

  features: int
  kernel_size: int
  first: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, v: jax.Array, h: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    k, c = self.kernel_size, self.features
    # vertical: kernel (k//2 + 1, k) over rows i - k//2 .. i; "A" drops row i itself
    v_mask = np.ones((k // 2 + 1, k, v.shape[-1], 2 * c), np.float32)
    h_mask = np.ones((1, k // 2 + 1, h.shape[-1], 2 * c), np.float32)
    if self.first:
      v_mask[-1], h_mask[:, -1] = 0.0, 0.0
    conv = lambda name, kernel, pad, mask: nn.Conv(  # noqa: E731
      2 * c, kernel, padding=pad, mask=jnp.asarray(mask), dtype=self.dtype, name=name
    )
    v_out = conv("vertical", (k // 2 + 1, k), ((k // 2, 0), (k // 2, k // 2)), v_mask)(v)
    h_out = conv("horizontal", (1, k // 2 + 1), ((0, 0), (k // 2, 0)), h_mask)(h)
    # the vertical output at row i covers rows < i only (by induction over the layers), so the
    # horizontal stack may read it at the same position
    h_out = h_out + nn.Conv(2 * c, (1, 1), dtype=self.dtype, name="vertical_to_horizontal")(v_out)
    if bias is not None:
      v_out, h_out = v_out + bias[:, None, None], h_out + bias[:, None, None]
    h_next = nn.Conv(c, (1, 1), dtype=self.dtype, name="horizontal_out")(_gate(h_out))
    return _gate(v_out), h_next if self.first else h + h_next


@interface.register("pixelcnn_prior", ("code_prior", "conditional"))
class PixelCNNPrior(Autoregressive, nn.Module):
  """Gated PixelCNN over the code grid (module docstring): x [B, L] int32 -> {"logits" [B, L, K],
  "code_nll" [B] nats, "metrics": {"bits_per_code"}}. Options: vocab_size K, grid (h, w), features C per
  stack, num_layers, kernel_size (odd), head_features, num_classes, class_dropout."""

  vocab_size: int = 512
  grid: Sequence[int] = ()
  features: int = 64
  num_layers: int = 10
  kernel_size: int = 5
  head_features: int = 256
  num_classes: int = 0
  class_dropout: float = 0.0
  input_shape: Sequence[int] = (49,)
  dtype: jnp.dtype = jnp.float32

  def _check(self) -> tuple[int, int]:
    grid = tuple(int(g) for g in self.grid)
    seq_len = int(np.prod(self.input_shape))
    if len(grid) == 3:
      raise ConfigError(
        f"pixelcnn_prior models one code per grid position; this stage one has {grid[2]} residual stages "
        "per position (grid h x w x S): use ar_prior (experiments/configs/prior_ar.py)"
      )
    if len(grid) != 2 or grid[0] * grid[1] != seq_len or len(self.input_shape) != 1:
      raise ConfigError(
        f"config.model.grid must be the stage one's code grid (h, w) with h * w = {seq_len} codes, got "
        f"{list(grid)} (experiments/configs/prior_pixelcnn.py reads it from the stage one)"
      )
    if self.kernel_size < 3 or self.kernel_size % 2 == 0:
      raise ConfigError(f"config.model.kernel_size must be odd and >= 3, got {self.kernel_size}")
    if self.vocab_size < 2 or self.num_layers < 1:
      raise ConfigError(
        f"config.model.vocab_size must be >= 2 and num_layers >= 1, got {self.vocab_size}, {self.num_layers}"
      )
    return grid[0], grid[1]

  def draw(self, variables: Any, key: jax.Array, labels: jax.Array | None, options) -> jax.Array:
    """One sequence [1, L] row by row: the positions of row i read the first i + 1 rows only
    (`sample_autoregressive` with blocks = h, about half the FLOPs of `draw_recompute`, the same tokens),
    with guidance W = options.guidance (`with_guidance`)."""
    check_guidance(type(self).__name__, options.guidance, self.num_classes, self.class_dropout)
    rows, cols = self._check()
    logits_fn = lambda t, y: self.apply(variables, t, y, rows=t.shape[1] // cols, method="logits")  # noqa: E731
    return sample_autoregressive(
      with_guidance(logits_fn, options.guidance, self.num_classes, options.guidance_schedule, rows * cols),
      key,
      1,
      seq_len=rows * cols,
      temperature=options.temperature,
      top_k=options.top_k,
      top_p=options.top_p,
      labels=labels,
      blocks=rows,
    )

  @nn.compact
  def logits(
    self, tokens: jax.Array, labels: jax.Array | None = None, train: bool = False, rows: int | None = None
  ) -> jax.Array:
    """Logits [B, L, K] float32 of tokens [B, L] (logits[:, t] reads tokens[:, :t]); labels [B] are
    used by a class-conditional prior and ignored by an unconditional one. `rows` r: tokens [B, r w] of the
    first r rows of the grid only, logits [B, r w, K] (equal to the full grid's there: nothing reads a
    later row)."""
    height, cols = self._check()
    rows = height if rows is None else rows
    if not 1 <= rows <= height:
      raise ConfigError(f"pixelcnn_prior: rows must be in [1, {height}] (the grid's), got {rows}")
    labels = labels if self.num_classes else None
    check_tokens("pixelcnn_prior", tokens, rows * cols)
    check_labels("pixelcnn_prior", labels, self.num_classes, tokens.shape[0])
    check_class_dropout("pixelcnn_prior", self.class_dropout, self.num_classes)
    if labels is not None and train and self.class_dropout > 0:
      labels = drop_labels(self.make_rng("dropout"), labels, self.class_dropout, self.num_classes)
    classes = self.num_classes + (1 if self.class_dropout > 0 else 0)  # the null class last
    x = nn.Embed(self.vocab_size, self.features, name="embed")(tokens.astype(jnp.int32))
    x = x.reshape(tokens.shape[0], rows, cols, self.features).astype(self.dtype)
    v = h = x
    for i in range(self.num_layers):
      bias = None
      if labels is not None:
        bias = nn.Embed(classes, 2 * self.features, name=f"class_bias_{i}")(labels.astype(jnp.int32))
      v, h = GatedLayer(self.features, self.kernel_size, i == 0, self.dtype, name=f"layer_{i}")(v, h, bias)
    y = nn.Conv(self.head_features, (1, 1), dtype=self.dtype, name="head_hidden")(nn.relu(h))
    y = nn.Conv(self.vocab_size, (1, 1), dtype=jnp.float32, name="head")(nn.relu(y).astype(jnp.float32))
    return y.reshape(tokens.shape[0], rows * cols, self.vocab_size)
