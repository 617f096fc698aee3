"""What a model can do beyond `__call__(x, *, train) -> dict of outputs`: its abilities, declared once.

Every registered model lists its abilities in its registry entry (`ae_jax.models.MODELS`); evaluators,
the trainer and the inspector ask `models.abilities(model)` instead of probing for methods, and a config
that asks for something the model cannot do fails before training with the reason. Each ability is a
Protocol the model class implements (a test checks every registered model against its declared ones):

* "masked": `__call__(x, *, train, mask)` takes a prefix padding mask [B, T] (1 = real step).
* "generative": `latent_dim` and `generate(z [N, latent_dim]) -> [N, *input_shape]`, the mean of p(x|z)
  (prior samples).
* "likelihood": `encode(x) -> (mean, logvar)` of a diagonal Gaussian q(z|x) and `importance_terms(x, eps
  [k, B, D])` -> log p(x|z), log p(z), log q(z|x) [k, B] (importance-sampled log-likelihoods).
* "quantized": the outputs hold integer "indices" [B, ...] (one token per latent position and codebook) and
  `codebooks() -> tuple[int, ...]` gives the size of each codebook a position is coded with (one entry per
  residual stage), so a position carries sum(log2 K) bits.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax


@runtime_checkable
class Generative(Protocol):
  latent_dim: int

  def generate(self, z: jax.Array) -> jax.Array: ...


@runtime_checkable
class Likelihood(Protocol):
  def encode(self, x: jax.Array) -> Any: ...

  def importance_terms(self, x: jax.Array, eps: jax.Array) -> dict[str, jax.Array]: ...


@runtime_checkable
class Quantized(Protocol):
  def codebooks(self) -> tuple[int, ...]: ...


class Masked(Protocol):
  """`__call__(x, *, train, mask)` (a keyword argument, checked against the signature by a test)."""


ABILITIES: dict[str, type] = {
  "masked": Masked,
  "generative": Generative,
  "likelihood": Likelihood,
  "quantized": Quantized,
}
