"""What a model can do beyond `__call__(x, *, train) -> dict of outputs`: its abilities, declared once.

Every registered model lists its abilities in its registry entry (`ModelSpec` in `ae_jax.models.MODELS`,
added by the `register` decorator beside the class); evaluators,
the trainer and the inspector ask `models.abilities(model)` instead of probing for methods, and a config
that asks for something the model cannot do fails before training with the reason. Each ability is a
Protocol the model class implements (a test checks every registered model against its declared ones):

* "masked": `__call__(x, *, train, mask)` takes a prefix padding mask [B, T] (1 = real step).
* "conditional": `__call__(x, *, train, labels)` takes the examples' class labels [B] int32 (the batch's
  "label") and `num_classes` says how many; with num_classes == 0 the model is unconditional and ignores
  them.
* "generative": `latent_dim` and `generate(z [N, latent_dim]) -> [N, *input_shape]`, the mean of p(x|z)
  (prior samples).
* "likelihood": `encode(x) -> (mean, logvar)` of a diagonal Gaussian q(z|x) and `importance_terms(x, eps
  [k, B, D])` -> log p(x|z), log p(z), log q(z|x) [k, B] (importance-sampled log-likelihoods).
* "autoencoding": `latent_code(x) -> [B, D]` and `decode_latent(code) -> [B, *input_shape]`, the
  reconstruction (a deterministic code; an ex-post density over the codes makes it generative:
  `ae_jax.generation.latent`).
* "frame_latents": a local latent per frame of a sequence [B, T, F] with the prior N(0, I) on each frame:
  `latent_dim`, `frame_codes(x) -> [B, T, latent_dim]` (posterior means; a real frame's code does not
  depend on the padding after it) and `decode_frames(z [B, T, latent_dim]) -> [B, T, F]` (the mean of
  p(x|z)).
* "code_prior": a prior over token sequences x [B, L] int32 in [0, vocab_size) (a stage one's codes,
  `ae_jax.generation.codes`): `vocab_size`, `num_classes` (0: unconditional); class attributes `objective`
  (the loss term it trains with), `score` ("nll": `eval_nats` is the exact -log p(x); "masked_xent": a masked-
  token cross-entropy, not a likelihood) and `sampling_options` (the `generate.SampleOptions` fields it
  reads); `logits(tokens, labels, train)`; `eval_nats(x, index, labels, settings) -> [B]` nats per example
  (what the `prior_likelihood` evaluator sums; `settings` its config section); and `draw(variables, key,
  labels, options) -> tokens [1, L]`, one sample of the model with these variables (plain Python on the
  unbound module, jittable).
* "code_flow": a prior over continuous codes x [B, *code_shape] (an autoencoder's or VAE's standardised
  codes, `ae_jax.generation.latent_codes`) given by a velocity field: `velocity(x_t, t [B]) -> [B,
  *code_shape]` (its ODE from t = 1, N(0, I), to t = 0 carries noise onto the codes,
  `ae_jax.generation.diffusion`); class attributes `objective` and `sampling_options`, as "code_prior".
* "quantized": the outputs hold integer "indices" [B, ...] (one token per latent position and codebook) and
  `codebooks() -> tuple[int, ...]` gives the size of each codebook a position is coded with (one entry per
  residual stage), so a position carries sum(log2 K) bits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax

from ae_jax.core.registry import MODELS, Registry, Spec


@runtime_checkable
class Generative(Protocol):
  latent_dim: int

  def generate(self, z: jax.Array) -> jax.Array: ...


@runtime_checkable
class Likelihood(Protocol):
  def encode(self, x: jax.Array) -> Any: ...

  def importance_terms(self, x: jax.Array, eps: jax.Array) -> dict[str, jax.Array]: ...


@runtime_checkable
class Autoencoding(Protocol):
  def latent_code(self, x: jax.Array) -> jax.Array: ...

  def decode_latent(self, code: jax.Array) -> jax.Array: ...


@runtime_checkable
class FrameLatents(Protocol):
  latent_dim: int

  def frame_codes(self, x: jax.Array) -> jax.Array: ...

  def decode_frames(self, z: jax.Array) -> jax.Array: ...


@runtime_checkable
class CodePrior(Protocol):
  vocab_size: int
  num_classes: int
  objective: str
  score: str
  sampling_options: tuple[str, ...]

  def logits(self, tokens: jax.Array, labels: jax.Array | None = None, train: bool = False) -> jax.Array: ...

  def eval_nats(
    self, x: jax.Array, index: jax.Array, labels: jax.Array | None, settings: Any
  ) -> jax.Array: ...

  def draw(self, variables: Any, key: jax.Array, labels: jax.Array | None, options: Any) -> jax.Array: ...


SCORES = ("nll", "masked_xent")  # what a code prior's eval_nats measures


@runtime_checkable
class CodeFlow(Protocol):
  sampling_options: tuple[str, ...]

  def velocity(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array: ...


@runtime_checkable
class Quantized(Protocol):
  def codebooks(self) -> tuple[int, ...]: ...


class CodeAutoencoder(nn.Module):
  """Base of the autoencoders whose code is their latent (mlp_ae, conv_ae, tied_ae): a subclass defines
  `encode(x) -> code [B, D]` and `decode(code) -> [B, *input_shape]`; this gives `__call__` ({"code",
  "recon"}) and the "autoencoding" ability (`latent_code` is `encode`, `decode_latent` is `decode`)."""

  def encode(self, x: jax.Array) -> jax.Array:
    raise NotImplementedError

  def decode(self, code: jax.Array) -> jax.Array:
    raise NotImplementedError

  def latent_code(self, x: jax.Array) -> jax.Array:
    """The "autoencoding" ability: x -> its code [batch, D] (`encode`)."""
    return self.encode(x)

  def decode_latent(self, code: jax.Array) -> jax.Array:
    """The "autoencoding" ability: a code [batch, D] -> the reconstruction (`decode`)."""
    return self.decode(code)

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    """x [batch, *input_shape] -> {"code": [batch, D], "recon": [batch, *input_shape]}."""
    code = self.encode(x)
    return {"code": code, "recon": self.decode(code)}


@runtime_checkable
class Conditional(Protocol):
  """`__call__(x, *, train, labels)` (a keyword argument, checked against the signature by a test)."""

  num_classes: int


class Masked(Protocol):
  """`__call__(x, *, train, mask)` (a keyword argument, checked against the signature by a test)."""


ABILITIES: dict[str, type] = {
  "masked": Masked,
  "conditional": Conditional,
  "generative": Generative,
  "likelihood": Likelihood,
  "autoencoding": Autoencoding,
  "frame_latents": FrameLatents,
  "quantized": Quantized,
  "code_prior": CodePrior,
  "code_flow": CodeFlow,
}


# Fields a config never sets: the input shape comes from the dataset, the dtype and the device axis (for
# cross-device statistics) from the trainer.
NOT_CONFIGURED = ("parent", "name", "input_shape", "dtype", "axis_name")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec(Spec):
  """A registered model: its linen Module class and the abilities it implements (keys of `ABILITIES`).

  options: the class's configurable fields with their defaults (computed from the dataclass).
  sections: field -> the registry of another plug-in kind whose entry the field names, configured as a
  nested section {"name": ..., its options} (the VQ-VAE's `quantizer`).
  upgrade: a saved config.model dict of an older layout -> today's (restoring old workdirs), or None.
  """

  cls: type
  abilities: frozenset[str] = frozenset()
  sections: Mapping[str, Registry] = dataclasses.field(default_factory=dict)
  upgrade: Callable[[dict], dict] | None = None

  def __post_init__(self) -> None:
    super().__post_init__()
    unknown = set(self.abilities) - set(ABILITIES)
    if unknown:
      raise ValueError(
        f"{self.cls.__name__}: unknown abilities {sorted(unknown)}; known: {sorted(ABILITIES)}"
      )
    if "code_prior" in self.abilities and getattr(self.cls, "score", None) not in SCORES:
      raise ValueError(
        f"{self.cls.__name__}.score must be one of {SCORES}, got {getattr(self.cls, 'score', None)!r}"
      )
    if not self.options:
      fields = {f.name: f.default for f in dataclasses.fields(self.cls) if f.name not in NOT_CONFIGURED}
      object.__setattr__(self, "options", fields)

  @property
  def target(self) -> Any:
    return self.cls

  def details(self) -> list[str]:
    return [f"abilities: {'/'.join(sorted(self.abilities))}"] if self.abilities else []


def register(
  name: str,
  abilities: Iterable[str] = (),
  *,
  sections: Mapping[str, Registry] | None = None,
  upgrade: Callable[[dict], dict] | None = None,
  description: str = "",
) -> Callable[[type], type]:
  """Class decorator registering a linen Module as model `name` (config.model.name) with `abilities`;
  `sections`, `upgrade`: see `ModelSpec`."""

  def add(cls: type) -> type:
    MODELS.register(
      ModelSpec(
        name=name,
        cls=cls,
        abilities=frozenset(abilities),
        sections=dict(sections or {}),
        upgrade=upgrade,
        description=description,
      )
    )
    return cls

  return add
