"""The transformer trunk shared by the autoregressive prior and MaskGIT: pre-LayerNorm blocks.

Block (Radford et al. 2019, GPT-2 layout): x + Drop(Attn(LN(x))), then x + Drop(MLP(LN(x))) with
MLP = Dense(mlp_dim) -> GELU -> Dense(D); a final LayerNorm after the last block. Attention is flax's
`nn.MultiHeadDotProductAttention` (query, key and value projections to D = num_heads * D / num_heads
features); `causal=True` applies `nn.make_causal_mask` (position t attends to positions <= t), False is
bidirectional. `SequenceTransformer` adds what both priors share around the trunk: token and learned
position embeddings in, a float32 Dense head to the K real tokens out.

Cached decoding (causal trunks only): with `decode=True` every attention layer keeps its keys and values
in the flax "cache" collection (flax's `MultiHeadDotProductAttention(decode=True)`: cached_key,
cached_value [B, L, heads, D / heads] and cache_index), so one position at a time costs one pass over
one token instead of L. A call with ids [B, L] creates the zero cache of a batch (`transformer.zero_cache`);
each call then reads ids [B, 1] at `position` (the cache's index: positions 0, 1, ... in turn) and returns
that position's logits (float32-close to the full forward's: the same weights, the not-yet-written cache
entries masked out).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax.core.errors import ConfigError

# GPT-2 / BERT initialisation of embeddings and position embeddings.
_EMBED_INIT = nn.initializers.normal(stddev=0.02)


class TransformerBlock(nn.Module):
  """One pre-LayerNorm block: [B, L, D] -> [B, L, D] (`mask` [B or 1, 1, L, L], True = may attend)."""

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, *, train: bool, decode: bool = False) -> jax.Array:
    width = x.shape[-1]
    y = nn.LayerNorm(dtype=self.dtype, name="ln_attn")(x)
    y = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      dtype=self.dtype,
      dropout_rate=self.dropout,
      deterministic=not train,
      force_fp32_for_softmax=True,
      decode=decode,
      name="attn",
    )(y, mask=mask)
    x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
    y = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in")(y)
    y = nn.Dense(width, dtype=self.dtype, name="mlp_out")(nn.gelu(y))
    return x + nn.Dropout(self.dropout)(y, deterministic=not train)


class Transformer(nn.Module):
  """`num_layers` blocks, then LayerNorm: embeddings [B, L, D] -> hidden states [B, L, D] (compute dtype)."""

  num_layers: int
  num_heads: int
  mlp_dim: int
  causal: bool
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, decode: bool = False) -> jax.Array:
    if x.shape[-1] % self.num_heads:
      raise ConfigError(
        f"transformer: embed_dim {x.shape[-1]} is not divisible by num_heads {self.num_heads}; "
        "choose an embed_dim that is a multiple of num_heads"
      )
    if decode and not self.causal:
      raise ConfigError("transformer: cached decoding needs a causal trunk (causal=True)")
    # decoding: the cache masks the positions not yet written (flax's attention)
    mask = nn.make_causal_mask(x[:1, :, 0], dtype=jnp.bool_) if self.causal and not decode else None
    x = x.astype(self.dtype)
    for i in range(self.num_layers):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout, self.dtype, name=f"block_{i}")(
        x, mask, train=train, decode=decode
      )
    return nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)


_MODULE = ("parent", "name")  # a linen Module's own fields


class TrunkOptions(nn.Module):
  """The options of a `Transformer` trunk: num_layers blocks (num_heads, width embed_dim, MLP mlp_dim,
  dropout) computed in dtype."""

  num_layers: int = 4
  num_heads: int = 4
  embed_dim: int = 128
  mlp_dim: int = 512
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def trunk_options(self) -> dict:
    """These options as keyword arguments (of `SequenceTransformer`, or of a `TokenPrior`)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrunkOptions) if f.name not in _MODULE}


class SequenceTransformer(TrunkOptions, kw_only=True):
  """Token ids [B, N] (ids < `num_embeddings`) -> logits [B, N, `num_outputs`] float32.

  Token embedding + learned position embedding [N, D] (N <= `max_len`), dropout, the trunk, and a Dense
  head computed in float32 whatever `dtype` (the trunk's compute dtype).
  """

  num_embeddings: int
  num_outputs: int
  max_len: int
  causal: bool

  @nn.compact
  def __call__(
    self, ids: jax.Array, *, train: bool, decode: bool = False, position: jax.Array | None = None
  ) -> jax.Array:
    """ids [B, N] -> logits [B, N, num_outputs] float32; with `decode` and a `position` (int32 scalar),
    ids [B, 1] at that position through the "cache" collection (module docstring)."""
    length = ids.shape[-1]
    if length > self.max_len:
      raise ConfigError(f"transformer: sequences of length {length} exceed its max length {self.max_len}")
    x = nn.Embed(self.num_embeddings, self.embed_dim, embedding_init=_EMBED_INIT, name="token_embed")(ids)
    pos = self.param("pos_embed", _EMBED_INIT, (self.max_len, self.embed_dim), jnp.float32)
    if position is None:
      pos = pos[:length]
    else:
      pos = jax.lax.dynamic_slice_in_dim(pos, jnp.asarray(position, jnp.int32), length, axis=0)
    x = nn.Dropout(self.dropout)(x + pos, deterministic=not train)
    h = Transformer(
      self.num_layers, self.num_heads, self.mlp_dim, self.causal, self.dropout, self.dtype, name="trunk"
    )(x, train=train, decode=decode)
    return nn.Dense(self.num_outputs, dtype=jnp.float32, name="head")(h.astype(jnp.float32))


class TokenPrior(TrunkOptions, kw_only=True):
  """The options shared by the token priors (`ARTransformer`, `MaskGITTransformer`): a vocabulary of K =
  vocab_size tokens, sequences of seq_len, num_classes > 0 for class-conditional priors (class_dropout > 0:
  trained with a null class for classifier-free guidance, `transformer.drop_labels`), and the trunk's
  (`TrunkOptions`)."""

  vocab_size: int
  seq_len: int
  num_classes: int = 0
  class_dropout: float = 0.0
