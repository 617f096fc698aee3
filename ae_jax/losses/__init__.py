"""Per-example loss terms and the weighted objective built from them.

Two layers:

* Primitive functions (`mse`, `l1`, `bernoulli_nll`, `gaussian_nll`, `gaussian_kl`, in
  `ae_jax.losses.functions`) take arrays with a leading batch axis and reduce every other axis, returning
  shape `[batch]`. An optional `mask` of shape `[batch, ...]` (a prefix of the data's shape, e.g.
  `[batch, time]` for sequences) drops padded positions from the reduction.
* Named terms (`LOSSES`, `LossSpec` entries, ae_jax/core/registry.py) read a model's outputs dict and the
  batch, e.g. `mse` compares `outputs["recon"]` with `batch["x"]`. An objective is a weighted sum of
  named terms chosen in the config (`config.loss = {"mse": 1.0}`); a weight of 0 reports a term without
  optimising it.

Prototyping a new loss is one function and one config line::

    @losses.register("total_variation")
    def total_variation(outputs, batch):
        r = outputs["recon"]
        return jnp.abs(jnp.diff(r, axis=1)).mean(axis=(1, 2, 3))

    config.loss.total_variation = 0.1

Conventions: `mse` and `l1` average over the non-batch axes (per element, as PyTorch's MSELoss), so they
are comparable across image sizes; the negative log-likelihoods and the KL sum over them (nats per example),
so `bernoulli_nll + kl` is the negative ELBO.

A term that reads a dataset constant from the batch declares it (`register(name, constants=(...))`);
`needed_constants` lists them for a config and `train.objective_constants` supplies them. Terms are
registered by the module that defines them and found by name (ae_jax/core/registry.py): the per-example terms
in `ae_jax.losses.example_terms`, the batch-level terms of β-TCVAE, InfoVAE and WAE (`tc_mi`, `tc`,
`tc_dwkl`, `mmd_imq`, `mmd_rbf`, ...) in `ae_jax.losses.batch_terms`, the quantizers' in
`ae_jax.quantizers.terms`, the token terms in `ae_jax.models.lstm_ae`; a term of your own in any module
(`config.loss["your.module:name"] = w`, docs/extending.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax

from ae_jax.core.errors import ConfigError
from ae_jax.core.registry import LOSSES, Spec
from ae_jax.losses.functions import (
  Batch,
  LossTerm,
  Outputs,
  Weight,
  bernoulli_nll,
  gaussian_kl,
  gaussian_nll,
  l1,
  mse,
  per_example_mean,
  per_example_sum,
)

__all__ = [
  "CONSTANTS",
  "LOSSES",
  "Batch",
  "LossSpec",
  "LossTerm",
  "Outputs",
  "Objective",
  "Weight",
  "adversarial_terms",
  "bernoulli_nll",
  "check_loss_names",
  "gaussian_kl",
  "gaussian_nll",
  "l1",
  "make_objective",
  "mse",
  "needed_constants",
  "per_example_mean",
  "per_example_sum",
  "register",
  "require_output",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossSpec(Spec):
  """A registered loss term `fn(outputs, batch) -> [batch]`; calling the spec calls it.

  constants: the dataset constants (e.g. "data_variance", "dataset_size") it reads from the batch.
  adversarial: a generator term that reads the discriminator's logits (outputs["disc_fake"]): with a
  discriminator configured its weight is scaled by the adaptive weight and is 0 before the discriminator
  starts (`ae_jax.training.adversarial`); without one the term is refused.
  """

  fn: LossTerm
  constants: tuple[str, ...] = ()
  adversarial: bool = False

  @property
  def target(self) -> Any:
    return self.fn

  def __call__(self, outputs: Outputs, batch: Batch) -> jax.Array:
    return self.fn(outputs, batch)

  def details(self) -> list[str]:
    details = [f"reads batch[{', '.join(self.constants)}]"] if self.constants else []
    return details + (["adversarial (reads the discriminator's logits)"] if self.adversarial else [])


def register(
  name: str, constants: Sequence[str] = (), description: str = "", *, adversarial: bool = False
) -> Callable[[LossTerm], LossTerm]:
  """Decorator adding `fn(outputs, batch) -> [batch]` to `LOSSES` under `name`; `constants` names the
  dataset constants (e.g. "data_variance", "dataset_size") it reads from the batch; `adversarial` marks a
  generator term that reads outputs["disc_fake"] (see `LossSpec`). The same module registering the name
  again (a module reloaded, a notebook cell run twice) replaces it; another module is refused."""

  def add(fn: LossTerm) -> LossTerm:
    spec = LossSpec(
      name=name, fn=fn, constants=tuple(constants), adversarial=adversarial, description=description
    )
    LOSSES.register(spec)
    return fn

  return add


class _Constants(Mapping[str, tuple[str, ...]]):
  """A read-only view {term name: the dataset constants it reads} of `LOSSES`."""

  def __getitem__(self, name: str) -> tuple[str, ...]:
    spec = LOSSES.get(name)
    if spec is None:
      raise KeyError(name)
    return spec.constants

  def __iter__(self):
    return iter(LOSSES)

  def __len__(self) -> int:
    return len(LOSSES)


CONSTANTS: Mapping[str, tuple[str, ...]] = _Constants()


def needed_constants(names: Iterable[str]) -> frozenset[str]:
  """The dataset constants the registered terms `names` read (unknown names read none)."""
  return frozenset(c for name in names if name in LOSSES for c in LOSSES[name].constants)


def require_output(outputs: Outputs, key: str, term: str) -> jax.Array:
  """outputs[key], or a KeyError telling which term needs which model output."""
  if key not in outputs:
    raise KeyError(
      f"loss term '{term}' needs the model output '{key}', but the model returned {sorted(outputs)}; "
      f"remove '{term}' from config.loss or use a model that outputs '{key}'"
    )
  return outputs[key]


def check_loss_names(names: Mapping[str, object] | list[str]) -> None:
  """Raises ConfigError naming the closest registered term for any unknown loss name (a name may be
  `module:term`, the module imported first: a top-level module, as config keys take no dots)."""
  for name in names:
    LOSSES.lookup(name, "config.loss term")


def adversarial_terms(names: Iterable[str]) -> tuple[str, ...]:
  """The registered generator terms among `names` that read the discriminator's logits, in order."""
  return tuple(name for name in names if name in LOSSES and LOSSES[name].adversarial)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity, as jax.jit needs
class Objective:
  """`objective(outputs, batch, step) -> (total [batch], {name: term [batch]})`: the weighted sum of the
  registered terms named in `weights` (a float or a schedule `step -> weight` each, e.g. a KL warm-up);
  `constants` (e.g. {"data_variance": 0.063}) are added to every batch the terms see."""

  weights: Mapping[str, Weight]
  constants: Mapping[str, float] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    check_loss_names(list(self.weights))
    # resolved once, not at every trace
    object.__setattr__(self, "_specs", {name: LOSSES[name] for name in self.weights})

  def terms(self, outputs: Outputs, batch: Batch) -> dict[str, jax.Array]:
    """Every named term, unweighted: {name: [batch]}."""
    batch = {**batch, **self.constants}
    return {name: spec(outputs, batch) for name, spec in self._specs.items()}

  def weighted_sum(self, terms: Mapping[str, jax.Array], step: jax.Array, names: Iterable[str]) -> jax.Array:
    """sum over `names` of weight(step) * terms[name] ([batch]; 0.0 for no names)."""
    total = 0.0
    for name in names:
      w = self.weights[name]
      total = total + (w(step) if callable(w) else w) * terms[name]
    return total

  def without(self, names: Iterable[str]) -> Objective:
    """The same objective without the terms `names` (e.g. the adversarial ones, which evaluation cannot
    compute without a discriminator)."""
    drop = set(names)
    return Objective({k: w for k, w in self.weights.items() if k not in drop}, self.constants)

  def __call__(
    self, outputs: Outputs, batch: Batch, step: jax.Array
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    terms = self.terms(outputs, batch)
    return self.weighted_sum(terms, step, self.weights), terms


def make_objective(weights: Mapping[str, Weight], constants: Mapping[str, float] | None = None) -> Objective:
  """The `Objective` of `weights` (config.loss: term name -> weight or schedule) and dataset `constants`;
  ConfigError for an empty objective or an unknown term."""
  if not weights:
    raise ConfigError("config.loss is empty; name at least one loss term, e.g. config.loss = {'mse': 1.0}")
  return Objective(dict(weights), dict(constants or {}))
