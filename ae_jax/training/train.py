"""The pure train step and evaluation sums (written per device, run under `jax.pmap`) and the train state.

Both take their dependencies (model, objective, optimizer) as keyword-only arguments, so a trainer
binds them once with `functools.partial` and pmaps the result; `ae_jax.runner.loop.train_and_evaluate` is
the
loop, and `build` makes the model, objective and optimizer from a config.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from ae_jax import losses, models
from ae_jax.core import parallel
from ae_jax.core.errors import ConfigError
from ae_jax.losses import Weight
from ae_jax.training import adversarial, optim

if TYPE_CHECKING:  # for annotations only: the steps never touch the data
  from ae_jax.data import Dataset

Objective = Callable[[Mapping[str, jax.Array], Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict]]
RNG_STREAMS = ("sample", "dropout")  # the rng names a model may ask for with self.make_rng(...)
_EVAL_STREAM = 0x7FFFFFFF  # folded into the state's key for evaluation, so eval never reuses a train key


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue bit-exactly: a plain pytree, checkpointed whole.

  step: int32 []; params: trainable variables; model_state: the model's other collections (e.g. batch_stats,
  EMA codebooks); opt_state: optax state; rng: raw uint32 [2] key from which each step's key is folded;
  ema_params: the Polyak average of params (config.ema_decay > 0), else None; adversary: the
  discriminator's `adversarial.AdversaryState` (config.adversarial), else None.
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None
  adversary: Any = None


def evaluation_state(state: TrainState) -> TrainState:
  """The state evaluators, reconstructions, code caches and samplers use: params replaced by ema_params
  when the run keeps a weight EMA, else `state` itself."""
  return state if state.ema_params is None else state.replace(params=state.ema_params)


def ema_update(ema: Any, params: Any, decay: float, step: jax.Array) -> Any:
  """ema * d + params * (1 - d) with d = min(decay, (1 + step) / (10 + step)) (latent-diffusion's LitEma:
  the average forgets its start quickly), in float32."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
  return jax.tree.map(lambda e, p: e * d + p.astype(e.dtype) * (1.0 - d), ema, params)


def run_once(fn: Callable, *args: Any) -> Any:
  """`fn(*args)`, jitted with XLA's backend optimisation off: for code that runs once, such as a model's
  `init` (`create_train_state`; tests initialise their models with it too).

  On CPU, optimising the threefry random-number kernels of a model's init takes ~1 s per parameter
  (12 s for conv_ae); unoptimised it takes 2 s. Results differ from an optimised compile by float32
  rounding (~1e-7) and are deterministic. Backends that reject the option compile normally.
  """
  lowered = jax.jit(fn).lower(*args)
  try:
    compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
  except Exception:  # noqa: BLE001 - the option is a CPU/GPU XLA flag; fall back to the default compile
    compiled = lowered.compile()
  return compiled(*args)


def init_fn(model: nn.Module) -> Callable[[Any, jax.Array], Any]:
  """(rngs, x [batch, ...]) -> the model's initial variables, also outside pmap (models may psum over the
  device axis)."""
  return parallel.with_named_axis(
    lambda r, x: model.init(r, x, train=False, **models.model_inputs(model, {"x": x}))
  )


def create_train_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  example_x: jax.Array,
  seed: int,
  *,
  ema: bool = False,
  adversary: adversarial.Adversary | None = None,
) -> TrainState:
  """Initialises parameters from `seed` with an example input [batch, ...]; not pmapped (one copy). `ema`:
  keep a weight average (starting at the initial params); `adversary`: initialise its discriminator."""
  root = jax.random.PRNGKey(seed)
  init_key, state_key = jax.random.split(root)
  keys = jax.random.split(init_key, 1 + len(RNG_STREAMS))
  rngs = {"params": keys[0], **dict(zip(RNG_STREAMS, keys[1:], strict=True))}
  variables = dict(run_once(init_fn(model), rngs, example_x))
  params = variables.pop("params")
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    model_state=variables,
    opt_state=tx.init(params),
    rng=state_key,
    ema_params=jax.tree.map(jnp.array, params) if ema else None,
    adversary=None if adversary is None else adversarial.init_state(adversary, example_x, seed),
  )


def apply_model(
  model: nn.Module,
  params: Any,
  model_state: Any,
  batch: Mapping[str, jax.Array],
  *,
  train: bool,
  rng: jax.Array,
) -> tuple[dict[str, jax.Array], Any]:
  """Runs the model on batch["x"] (with batch["mask"] for models with the "masked" ability, batch["label"]
  for those with the "conditional" one).

  Returns (outputs dict, updated model_state); only training updates the state. Outputs may hold
  "metrics": a dict of batch-level scalars (e.g. codebook perplexity) that the steps report as they are.
  """
  rngs = {name: jax.random.fold_in(rng, i) for i, name in enumerate(RNG_STREAMS)}
  variables = {"params": params, **model_state}
  kwargs = models.model_inputs(model, batch)
  if train and model_state:
    outputs, new_state = model.apply(
      variables, batch["x"], train=True, rngs=rngs, mutable=list(model_state), **kwargs
    )
    return outputs, dict(new_state)
  return model.apply(variables, batch["x"], train=train, rngs=rngs, **kwargs), model_state


def step_rng(state: TrainState, axis_name: str) -> jax.Array:
  """The key for this step on this device: fold_in(fold_in(rng, step), device index)."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(axis_name))


def trim_weights(
  total: jax.Array, step: jax.Array, fraction: float, after: int, axis_name: str
) -> tuple[jax.Array, jax.Array]:
  """Weights [B] that leave the `fraction` of the global batch with the largest per-example loss out of a
  trimmed mean (all ones before step `after`), and the global number of examples kept.

  The per-example losses of every device are gathered, so the examples left out are those one device
  would leave out of the same global batch (ties broken by position in the global batch).
  """
  gathered = jax.lax.all_gather(jax.lax.stop_gradient(total), axis_name, tiled=True)  # [G]
  size, local = gathered.shape[0], total.shape[0]
  dropped = int(fraction * size)
  order = jnp.argsort(-gathered, stable=True)
  rank = jnp.zeros(size, jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
  mine = jax.lax.dynamic_slice(rank, (jax.lax.axis_index(axis_name) * local,), (local,))
  trimming = step >= after
  keep = (mine >= dropped) | ~trimming
  return keep.astype(total.dtype), jnp.where(trimming, size - dropped, size).astype(total.dtype)


def train_step(
  state: TrainState,
  batch: Mapping[str, jax.Array],
  *,
  model: nn.Module,
  objective: losses.Objective,
  tx: optax.GradientTransformation,
  learning_rate: optax.Schedule,
  trainable: Callable[[Any], Any] | None = None,
  trim_fraction: float = 0.0,
  trim_after: int = 0,
  ema_decay: float = 0.0,
  adversary: adversarial.Adversary | None = None,
  axis_name: str = parallel.AXIS,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on this device's share of the global batch.

  Gradients, loss terms and the new model state are averaged over `axis_name`, so every device applies
  the same update: the result equals one step on the whole global batch. A step whose loss or gradient is
  not finite leaves the state untouched and reports `nonfinite` = 1 (2 when the batch itself held a NaN or
  an infinity), so no bad state is ever saved.

  Args:
    state: this device's copy of the train state.
    batch: {"x": [per_device_batch, ...], optional "mask", "label", ...}.
    trainable: params -> pytree of bools (`optim.trainable_mask`): "grad_norm" then covers only the
      trainable parameters, the ones the optimizer updates and clips.
    trim_fraction, trim_after: from step `trim_after` on, the loss is the mean over the global batch
      without its `trim_fraction` largest per-example losses (`trim_weights`); the terms stay plain means.
    ema_decay: with state.ema_params, the decay of the weight average (`ema_update`) updated after the
      step.
    adversary: a discriminator trained beside the model (`ae_jax.training.adversarial`: the order of the
      two updates, the adaptive weight).
  Returns:
    (new state, metrics: "loss", one entry per loss term, "grad_norm" (and "grad_norm/<module>",
    "param_norm/<module>" per top-level module), "learning_rate", "nonfinite"; with an adversary
    "adaptive_weight" and the discriminator's "disc/loss", "disc/<term>", "disc/logits_real",
    "disc/logits_fake", "disc/grad_norm").
  """
  rng = step_rng(state, axis_name)

  def forward(params):
    outputs, model_state = apply_model(model, params, state.model_state, batch, train=True, rng=rng)
    model_metrics = outputs.pop("metrics", {})
    if adversary is not None:
      outputs["disc_fake"] = adversarial.fake_logits(adversary, state.adversary, outputs["recon"])
    return objective.terms(outputs, batch), (outputs, model_metrics, model_state)

  extra: dict[str, jax.Array] = {}
  if adversary is None:

    def loss_fn(params):
      terms, (_, model_metrics, model_state) = forward(params)
      total = objective.weighted_sum(terms, state.step, objective.weights)
      loss = total.mean()
      if trim_fraction:
        weights, kept = trim_weights(total, state.step, trim_fraction, trim_after, axis_name)
        devices = jax.lax.psum(1, axis_name)
        loss = jnp.sum(weights * total) * devices / kept  # pmean over devices: the global trimmed mean
      return loss, ({k: v.mean() for k, v in terms.items()}, model_metrics, model_state)

    (loss, (terms, model_metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
    )
  else:
    grads, loss, terms, model_metrics, model_state, extra, recon = adversarial.generator_gradients(
      forward, state, objective, adversary, axis_name
    )
  grads, loss, terms, model_metrics = jax.lax.pmean((grads, loss, terms, model_metrics), axis_name)
  # Models that keep statistics sync them across devices themselves (named axis: BatchNorm, EMA codebooks);
  # averaging the float statistics here makes the copies agree for any that do not.
  model_state = jax.tree.map(
    lambda v: jax.lax.pmean(v, axis_name) if jnp.issubdtype(v.dtype, jnp.floating) else v, model_state
  )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1, params=new_params, model_state=model_state, opt_state=opt_state
  )
  if state.ema_params is not None:
    new_state = new_state.replace(ema_params=ema_update(state.ema_params, new_params, ema_decay, state.step))
  if trainable is not None:
    grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable(state.params))
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  if adversary is not None:
    disc_state, disc_metrics, disc_finite = adversarial.discriminator_step(
      adversary, state.adversary, batch, recon, state.step, axis_name
    )
    new_state = new_state.replace(adversary=disc_state)
    extra.update(disc_metrics)
    finite = finite & disc_finite
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  bad_input = jax.lax.pmax(nonfinite_input(batch), axis_name)
  metrics = {
    "loss": loss,
    **terms,
    **model_metrics,
    **extra,
    "grad_norm": grad_norm,
    **module_norms(grads, "grad_norm"),
    **module_norms(state.params, "param_norm"),
    "learning_rate": learning_rate(state.step),
    # 0: finite; 1: the loss or gradient was not; 2: neither was the batch itself
    "nonfinite": (1.0 - finite.astype(jnp.float32)) * (1.0 + bad_input),
  }
  return new_state, metrics


def nonfinite_input(batch: Mapping[str, jax.Array]) -> jax.Array:
  """1.0 when any floating-point entry of the batch is NaN or infinite, else 0.0 (float32 scalar)."""
  flags = [~jnp.all(jnp.isfinite(v)) for v in batch.values() if jnp.issubdtype(v.dtype, jnp.floating)]
  return jnp.any(jnp.stack(flags)).astype(jnp.float32) if flags else jnp.float32(0.0)


def module_norms(tree: Any, prefix: str) -> dict[str, jax.Array]:
  """Global L2 norm of each top-level module of a parameter-shaped tree: {"<prefix>/encoder": [], ...}."""
  if not isinstance(tree, Mapping):
    return {}
  return {f"{prefix}/{name}": optax.tree.norm(sub) for name, sub in tree.items()}


def eval_rng(state: TrainState, batch: Mapping[str, jax.Array], axis_name: str = parallel.AXIS) -> jax.Array:
  """The key of an evaluation batch on this device: never a training key, the same for the same batch."""
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, _EVAL_STREAM), batch["index"][0])
  return jax.random.fold_in(rng, jax.lax.axis_index(axis_name))


def eval_sums(
  state: TrainState,
  batch: Mapping[str, jax.Array],
  *,
  model: nn.Module,
  objective: Objective,
  axis_name: str = parallel.AXIS,
) -> dict[str, jax.Array]:
  """This device's sums of every loss term (and the weighted total "loss") over its valid examples.

  `batch["valid"]` [per_device_batch] marks real examples (0 for padding of a last partial batch), so the
  caller divides the accumulated sums by the accumulated "count" for exact dataset means.
  """
  outputs, _ = apply_model(
    model, state.params, state.model_state, batch, train=False, rng=eval_rng(state, batch, axis_name)
  )
  model_metrics = outputs.pop("metrics", {})
  total, terms = objective(outputs, batch, state.step)
  valid = batch["valid"].astype(jnp.float32)
  sums = {"loss": jnp.sum(total * valid), **{k: jnp.sum(v * valid) for k, v in terms.items()}}
  # batch-level model metrics, weighted by the batch's valid examples (a per-batch average)
  sums.update({k: v * jnp.sum(valid) for k, v in model_metrics.items()})
  sums["count"] = jnp.sum(valid)
  return sums


def train_steps(
  state: TrainState, batches: Mapping[str, jax.Array], **step_options: Any
) -> tuple[TrainState, dict[str, jax.Array]]:
  """Several optimisation steps in one dispatch: `train_step` scanned over the leading axis of batches
  [k, per_device_batch, ...]; returns the state after the k steps and every step's metrics, each [k].

  The same function as k calls of `train_step` (each step folds its own step number into its key), so
  the parameters equal those of k single steps (tested); `step_options` are `train_step`'s keywords.

  On XLA:CPU the k steps are traced one after another instead: convolutions inside a while loop run there
  on a generic path some 30x slower than outside one (jax 0.10: 2.0 s instead of 80 ms for the VQ-VAE
  step; a scan of length 1 is still a while loop). Accelerators keep the scan. With k = 1 (the default)
  a dispatch is exactly one `train_step`; with k > 1 on CPU, XLA may fuse across the k steps, so a run
  split into other dispatches (e.g. a changed total_steps) can differ in the last bits of float32; the
  same command resumed splits its dispatches as before and stays bitwise equal.
  """
  step = functools.partial(train_step, **step_options)
  if jax.default_backend() != "cpu":
    return jax.lax.scan(step, state, batches)
  metrics = []
  for i in range(jax.tree.leaves(batches)[0].shape[0]):
    state, m = step(state, jax.tree.map(lambda b, i=i: b[i], batches))
    metrics.append(m)
  return state, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)


def loss_weights(config: ml_collections.ConfigDict) -> dict[str, Weight]:
  """config.loss weights, with a linear warm-up from 0 for terms named in config.loss_schedules."""
  weights: dict[str, Weight] = {}
  for name, w in config.loss.items():
    warmup = int(config.loss_schedules.get(name, 0))
    weights[name] = optax.linear_schedule(0.0, float(w), warmup) if warmup else float(w)
  unknown = set(config.loss_schedules) - set(config.loss)
  if unknown:
    raise ConfigError(f"config.loss_schedules names {sorted(unknown)}, which are not in config.loss")
  return weights


def freeze_patterns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """config.freeze as a tuple of regexes (it may be one pattern or several)."""
  return (config.freeze,) if isinstance(config.freeze, str) else tuple(config.freeze)


def objective_constants(config: ml_collections.ConfigDict, dataset: Dataset) -> dict[str, float]:
  """Dataset constants the configured loss terms read from the batch (`losses.needed_constants`): the
  training variance `data_variance` (nmse), the training split's length `dataset_size` (the β-TCVAE
  terms) and the pixel range [`pixel_low`, `pixel_high`] in model units (the images' 0 and 1 under the
  dataset's `to_unit`: the LPIPS terms), each only when a term in config.loss needs it."""
  needed = losses.needed_constants(config.loss)
  constants = {}
  if "data_variance" in needed:
    if dataset.info.variance is None:
      term = next(n for n in config.loss if "data_variance" in losses.CONSTANTS.get(n, ()))
      raise ConfigError(
        f"config.loss.{term} needs the training variance, which dataset '{dataset.name}' does not provide; "
        "use mse instead"
      )
    constants["data_variance"] = dataset.info.variance
  if "dataset_size" in needed:
    constants["dataset_size"] = len(dataset.split("train"))
  if "pixel_low" in needed or "pixel_high" in needed:
    if dataset.info.to_unit is None:
      term = next(n for n in config.loss if "pixel_low" in losses.CONSTANTS.get(n, ()))
      raise ConfigError(
        f"config.loss.{term} compares images, but dataset '{dataset.name}' has no pixel range (its examples "
        "are not images); remove the term"
      )
    zero, one = (float(dataset.info.to_unit(v)) for v in (0.0, 1.0))  # to_unit is affine: x -> a x + b
    constants["pixel_low"], constants["pixel_high"] = -zero / (one - zero), (1.0 - zero) / (one - zero)
  return constants


def build(
  config: ml_collections.ConfigDict,
  input_shape: tuple[int, ...],
  constants: Mapping[str, float] | None = None,
) -> tuple[nn.Module, Objective, Any, Any]:
  """(model, objective, optimizer, learning-rate schedule) from a config and the data's example shape;
  `constants` (see `objective_constants`) are added to every batch the loss terms see."""
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  fields = models.model_fields(config.model.name)
  if "input_shape" in fields:
    kwargs.setdefault("input_shape", tuple(input_shape))
  if "axis_name" in fields:  # models with cross-device statistics (BatchNorm, EMA codebooks)
    kwargs.setdefault("axis_name", parallel.AXIS)
  if "dtype" in fields:  # compute dtype; parameters and optimizer state stay float32
    kwargs.setdefault("dtype", jnp.dtype(config.dtype))
  model = models.get_model(config.model.name, **kwargs)
  tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps, freeze=freeze_patterns(config))
  return model, losses.make_objective(loss_weights(config), constants), tx, schedule
