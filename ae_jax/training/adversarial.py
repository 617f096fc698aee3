"""The second player of adversarial training: a discriminator, its objective, optimizer and state, and the
pure functions the train step calls (`ae_jax.training.train.train_step`).

One step updates both players from the state at the start of the step (a simultaneous update):

1. Generator. The model runs on the batch; the discriminator, with its parameters held fixed, scores the
   reconstructions ("disc_fake", `fake_logits`); the objective's terms are split into the
   reconstruction part R (every term of config.loss that is not `adversarial`) and the adversarial part
   A (the `adversarial` terms, e.g. "gan_hinge"). The generator's loss is R + lambda * f * A with
   f = 1 from `config.adversarial.start` on (0 before) and lambda the adaptive weight of taming-
   transformers' `VQLPIPSWithDiscriminator.calculate_adaptive_weight`:
       lambda = clip(||dR/dW|| / (||dA'/dW|| + 1e-4), 0, 1e4)
   where W is the model's last layer (its registry entry's `last_layer`, e.g. the decoder's output
   convolution) and A' the unweighted sum of the adversarial terms (so a single term of weight w gives
   taming's `d_weight * disc_weight`); gradients over the global batch, so 8 devices give the 1-device
   value. lambda = 1 with `adaptive_weight` False.
2. Discriminator. It scores the batch's images ("disc_real") and the same reconstructions with gradients
   stopped, in training mode (BatchNorm statistics of each batch, real then fake, as the reference), and
   descends its own objective (`config.adversarial.loss`, e.g. {"disc_hinge": 1.0}); before `start` its
   parameters and optimizer state are left as they are.

Neither player's update reads the other's new parameters, so the order of the two updates does not
matter; the generator's gradient never reaches the discriminator's parameters and the discriminator's
never the generator's (tested). A step whose loss or gradient is not finite for either player leaves
both untouched.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from ae_jax import losses
from ae_jax.core.errors import ConfigError
from ae_jax.core.registry import DISCRIMINATORS, MODELS
from ae_jax.models.discriminators import get_discriminator
from ae_jax.training import optim

MAX_WEIGHT, DELTA = 1e4, 1e-4  # taming's clamp of the adaptive weight and the epsilon of its denominator
_INIT_STREAM = 0xD15C  # folded into the run's seed for the discriminator's initial parameters


@flax.struct.dataclass
class AdversaryState:
  """The discriminator's part of the train state: params, model_state (e.g. batch_stats), opt_state."""

  params: Any
  model_state: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Adversary:
  """What the train step needs of the second player (module docstring).

  discriminator: the Module (`ae_jax.models.discriminators`); objective: its loss terms over
  "disc_real", "disc_fake" (and "r1"); tx: its optimizer; start: the first step at which it trains and
  the generator's adversarial terms count; last_layer: the path of the generator parameter the adaptive
  weight differentiates, () for no adaptive weight; adversarial_terms: the generator's terms that read
  the discriminator (from config.loss).
  """

  discriminator: nn.Module
  objective: losses.Objective
  tx: optax.GradientTransformation
  start: int
  last_layer: tuple[str, ...]
  adversarial_terms: tuple[str, ...]

  @property
  def needs_r1(self) -> bool:
    return "disc_r1" in self.objective.weights


def schema() -> ml_collections.ConfigDict:
  """The `config.adversarial` section with its defaults: no discriminator (name "")."""
  section = ml_collections.ConfigDict()
  # {"name": "" (none) or a registered discriminator, its options}: models.discriminators.discriminator_config
  section.discriminator = ml_collections.ConfigDict({"name": ""})
  section.loss = ml_collections.ConfigDict({"disc_hinge": 1.0})  # the discriminator's objective
  section.start = 0  # taming's disc_start: the step from which the discriminator trains and counts
  section.adaptive_weight = True  # taming's adaptive weight through the model's last layer
  # The discriminator's optimizer: config.optimizer's fields; taming trains it with Adam(0.5, 0.9).
  section.optimizer = ml_collections.ConfigDict(
    {"name": "adam", "learning_rate": 1e-4, "b1": 0.5, "b2": 0.9, "grad_clip_norm": 0.0}
  )
  return section


def _optimizer_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.optimizer with config.adversarial.optimizer's keys over it, schedule constant unless given."""
  section = ml_collections.ConfigDict(config.optimizer.to_dict())
  with section.unlocked():
    section.schedule, section.warmup_steps = "constant", 0
    for key, value in config.adversarial.optimizer.items():
      if key not in section:
        raise ConfigError(
          f"config.adversarial.optimizer.{key} is not an optimizer option ({sorted(section)})"
        )
      section[key] = value
  return section


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether config.adversarial names a discriminator."""
  return "adversarial" in config and bool(config.adversarial.discriminator.get("name", ""))


def check(config: ml_collections.ConfigDict) -> None:
  """ConfigError, before any compute, for adversarial terms without a discriminator, a discriminator
  without adversarial terms, an adaptive weight for a model that declares no `last_layer`, config.trim
  with a discriminator, a negative start, or an unknown discriminator, option or discriminator loss term."""
  terms = losses.adversarial_terms(config.loss)
  if not enabled(config):
    if terms:
      raise ConfigError(
        f"config.loss has adversarial terms {list(terms)} but no discriminator; set "
        "config.adversarial.discriminator (e.g. discriminator_config('patch_gan')) or remove them"
      )
    return
  if not terms:
    raise ConfigError(
      "config.adversarial.discriminator is set but config.loss has no adversarial term; add one, e.g. "
      "config.loss.gan_hinge = 0.8"
    )
  if float(config.trim.fraction):
    raise ConfigError("config.trim is not supported with a discriminator; set config.trim.fraction = 0")
  section = config.adversarial
  if int(section.start) < 0:
    raise ConfigError(f"config.adversarial.start must be >= 0, got {section.start}")
  if section.adaptive_weight and not last_layer(config.model.name):
    raise ConfigError(
      f"model '{config.model.name}' declares no last_layer for the adaptive weight; set "
      "config.adversarial.adaptive_weight = False or use a model that has one (vqgan, kl_autoencoder)"
    )
  DISCRIMINATORS.section(section.discriminator, "config.adversarial.discriminator")
  losses.check_loss_names(section.loss)
  if not section.loss:
    raise ConfigError("config.adversarial.loss is empty; name the discriminator's loss, e.g. disc_hinge")
  optim.check_options(_optimizer_section(config))


def last_layer(model_name: str) -> tuple[str, ...]:
  """The parameter path a registered model declares as its `last_layer` (class attribute), () if none."""
  return tuple(getattr(MODELS.lookup(model_name, "config.model.name").cls, "last_layer", ()) or ())


def build(config: ml_collections.ConfigDict, **fields: Any) -> Adversary | None:
  """The Adversary of config.adversarial (None without a discriminator), after `check`; `fields` (dtype,
  axis_name) go to the discriminator."""
  check(config)
  if not enabled(config):
    return None
  section = config.adversarial
  tx, _ = optim.make_optimizer(_optimizer_section(config), int(config.total_steps))
  objective = losses.make_objective({k: float(v) for k, v in section.loss.items()})
  disc = get_discriminator(section.discriminator, **fields)
  path = last_layer(config.model.name) if section.adaptive_weight else ()
  return Adversary(disc, objective, tx, int(section.start), path, losses.adversarial_terms(config.loss))


def init_state(adversary: Adversary, example_x: jax.Array, seed: int) -> AdversaryState:
  """The discriminator's initial state from `seed` (a stream of its own) on an example batch."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), _INIT_STREAM)
  init = jax.jit(functools.partial(adversary.discriminator.init, train=False))
  variables = dict(init(key, example_x))
  params = variables.pop("params")
  return AdversaryState(params, variables, adversary.tx.init(params))


def _apply(adversary: Adversary, params: Any, model_state: Any, images: jax.Array) -> tuple[jax.Array, Any]:
  """Logits of `images` in training mode and the updated model_state (batch statistics)."""
  variables = {"params": params, **model_state}
  if not model_state:
    return adversary.discriminator.apply(variables, images, train=True), model_state
  logits, new = adversary.discriminator.apply(variables, images, train=True, mutable=list(model_state))
  return logits, dict(new)


def fake_logits(adversary: Adversary, state: AdversaryState, recon: jax.Array) -> jax.Array:
  """The generator's view: D(recon) with the discriminator's parameters held fixed (gradients reach
  `recon` only; the batch statistics it computes are discarded)."""
  return _apply(adversary, jax.lax.stop_gradient(state.params), state.model_state, recon)[0]


def last_layer_of(tree: Any, path: tuple[str, ...]) -> jax.Array:
  """tree[path[0]][path[1]]...: the last-layer leaf of a parameter-shaped tree."""
  try:
    return functools.reduce(lambda node, key: node[key], path, tree)
  except (KeyError, TypeError) as e:
    raise ConfigError(f"the model's last_layer {'/'.join(path)} is not one of its parameters") from e


def adaptive_weight(rec_grad: jax.Array, adv_grad: jax.Array) -> jax.Array:
  """clip(||rec_grad|| / (||adv_grad|| + 1e-4), 0, 1e4), float32 []: taming's adaptive weight from the
  gradients of the reconstruction and adversarial losses with respect to the last layer."""
  rec = jnp.sqrt(jnp.sum(jnp.square(rec_grad.astype(jnp.float32))))
  adv = jnp.sqrt(jnp.sum(jnp.square(adv_grad.astype(jnp.float32))))
  return jnp.clip(rec / (adv + DELTA), 0.0, MAX_WEIGHT)


def discriminator_step(
  adversary: Adversary,
  state: AdversaryState,
  batch: Mapping[str, jax.Array],
  recon: jax.Array,
  step: jax.Array,
  axis_name: str,
) -> tuple[AdversaryState, dict[str, jax.Array], jax.Array]:
  """One update of the discriminator on real batch["x"] and `recon` (gradients stopped), averaged over
  `axis_name`: (new state, metrics "disc/...", finite flag []). Before `start` the state is unchanged."""
  real_images, fake_images = batch["x"], jax.lax.stop_gradient(recon)

  def loss_fn(params: Any) -> tuple[jax.Array, tuple]:
    real, model_state = _apply(adversary, params, state.model_state, real_images)
    fake, model_state = _apply(adversary, params, model_state, fake_images)
    outputs = {"disc_real": real, "disc_fake": fake}
    if adversary.needs_r1:
      score = lambda x: _apply(adversary, params, state.model_state, x)[0].sum()  # noqa: E731
      outputs["r1"] = jnp.sum(jnp.square(jax.grad(score)(real_images)), axis=tuple(range(1, real.ndim)))
    terms = adversary.objective.terms(outputs, batch)
    total = adversary.objective.weighted_sum(terms, step, adversary.objective.weights)
    logits = {"disc/logits_real": real.mean(), "disc/logits_fake": fake.mean()}
    return total.mean(), ({f"disc/{k}": v.mean() for k, v in terms.items()}, logits, model_state)

  (loss, (terms, logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  loss, terms, logits, grads = jax.lax.pmean((loss, terms, logits, grads), axis_name)
  model_state = jax.tree.map(
    lambda v: jax.lax.pmean(v, axis_name) if jnp.issubdtype(v.dtype, jnp.floating) else v, model_state
  )
  updates, opt_state = adversary.tx.update(grads, state.opt_state, state.params)
  new = AdversaryState(optax.apply_updates(state.params, updates), model_state, opt_state)
  active = step >= adversary.start
  new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  metrics = {"disc/loss": loss, **terms, **logits, "disc/grad_norm": grad_norm}
  return new, metrics, finite


def generator_gradients(
  forward: Callable,
  state: Any,
  objective: losses.Objective,
  adversary: Adversary,
  axis_name: str,
) -> tuple:
  """The generator's part of a step (module docstring): `forward(params) -> (terms {name: [B]}, (outputs,
  model metrics, model_state))` is the model's pass with the discriminator's logits; returns (grads of
  R + lambda f A, that loss, the terms' means, model metrics, model_state, {"adaptive_weight": lambda f},
  the reconstructions). One forward pass; the adaptive weight's two last-layer gradients are backward
  passes that XLA prunes to the path from the losses to that layer. Runs inside pmap over `axis_name`."""
  adv_names = adversary.adversarial_terms
  rec_names = [n for n in objective.weights if n not in adv_names]

  def parts(params):
    terms, aux = forward(params)
    rec = objective.weighted_sum(terms, state.step, rec_names).mean()
    unweighted = sum(terms[n] for n in adv_names).mean()
    weighted = objective.weighted_sum(terms, state.step, adv_names).mean()
    return (rec, unweighted, weighted), (terms, aux)

  (rec, unweighted, weighted), vjp, (terms, (outputs, model_metrics, model_state)) = jax.vjp(
    parts, state.params, has_aux=True
  )
  zero, one = jnp.zeros_like(rec), jnp.ones_like(rec)
  active = (state.step >= adversary.start).astype(jnp.float32)
  if adversary.last_layer:
    (rec_grad,) = vjp((one, zero, zero))
    (adv_grad,) = vjp((zero, one, zero))
    last = functools.partial(last_layer_of, path=adversary.last_layer)
    rec_last, adv_last = jax.lax.pmean((last(rec_grad), last(adv_grad)), axis_name)
    weight = jax.lax.stop_gradient(adaptive_weight(rec_last, adv_last))
  else:
    weight = jnp.float32(1.0)
  (grads,) = vjp((one, zero, weight * active))
  loss = rec + weight * active * weighted
  mean_terms = {k: v.mean() for k, v in terms.items()}
  return (
    grads,
    loss,
    mean_terms,
    model_metrics,
    model_state,
    {"adaptive_weight": weight * active},
    outputs["recon"],
  )
