"""A config built as the trainer builds it: the public entry for code that trains, evaluates or times a
model outside `loop.train_and_evaluate` (the loop itself, experiments/evaluate.py, the benchmarks, tests).

    exp = experiment.setup(config)                 # dataset, model, objective, optimizer, fresh state
    p_steps = experiment.pmapped_train_steps(exp)  # the trainer's pmapped step on host batches
    rstate, metrics = p_steps(parallel.replicate(exp.state), batch)  # batch [devices, k, per_device, ...]

Nothing here checks the config (`config.check_config` does, in the loop), opens a workdir or restores a
checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from ae_jax import data, evaluators
from ae_jax.core import parallel
from ae_jax.training import adversarial, optim, train

# How the trainer pmaps `train.train_steps` on host batches: over the device axis, the state donated.
PMAP_OPTIONS: dict[str, Any] = {"axis_name": parallel.AXIS, "donate_argnums": (0,)}


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a run builds from its config before the first step.

  dataset: the opened dataset (`data.get_dataset(config.data)`); model, objective, tx, schedule:
  `train.build`'s, the objective with the dataset constants its terms need (`train.objective_constants`);
  state: the fresh train state from config.seed, initialised on `example_shape` (one preprocessed training
  example, without the batch axis); workdir: where evaluators write their files (None: nowhere);
  adversary: the discriminator of config.adversarial (`adversarial.build`), or None.
  """

  config: ml_collections.ConfigDict
  dataset: data.Dataset
  model: nn.Module
  objective: train.Objective
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state: train.TrainState
  example_shape: tuple[int, ...]
  workdir: str | None = None
  adversary: adversarial.Adversary | None = None

  @property
  def step_options(self) -> dict[str, Any]:
    """The keywords `train.train_step` / `train.train_steps` take for this config: the model, objective,
    optimizer and schedule, the trainable mask of config.freeze and config.trim's trimming."""
    return dict(
      model=self.model,
      objective=self.objective,
      tx=self.tx,
      learning_rate=self.schedule,
      trainable=optim.trainable_mask(train.freeze_patterns(self.config)),
      trim_fraction=float(self.config.trim.fraction),
      trim_after=int(self.config.trim.after),
      ema_decay=float(self.config.ema_decay),
      adversary=self.adversary,
    )

  @property
  def num_params(self) -> int:
    """The number of trainable and frozen parameters (entries of state.params)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(self.state.params)))

  def context(self, file_prefix: str = "") -> evaluators.Context:
    """The evaluators' context of this experiment (their files: WORKDIR/<file_prefix><name>.png)."""
    # Evaluators report the objective without its adversarial terms, which need the discriminator: the
    # reconstruction terms on held-out data (the discriminator's numbers are logged during training).
    objective = self.objective.without(self.adversary.adversarial_terms) if self.adversary else self.objective
    return evaluators.Context(self.model, objective, self.dataset, self.config, self.workdir, file_prefix)


def setup(config: ml_collections.ConfigDict, workdir: str | None = None) -> Experiment:
  """Opens config.data, builds the model, objective and optimizer (`train.build`) and initialises a fresh
  state from config.seed on the first training example: exactly what `loop.train_and_evaluate` starts
  from (before it restores a checkpoint)."""
  dataset = data.get_dataset(config.data)
  info = dataset.info
  model, objective, tx, schedule = train.build(config, info.shape, train.objective_constants(config, dataset))
  example = info.preprocess(dataset.split("train")[0], 0)["x"][None]
  adversary = adversarial.build(config, dtype=jnp.dtype(config.dtype), axis_name=parallel.AXIS)
  state = train.create_train_state(
    model, tx, example, config.seed, ema=float(config.ema_decay) > 0, adversary=adversary
  )
  shape = tuple(example.shape[1:])
  return Experiment(config, dataset, model, objective, tx, schedule, state, shape, workdir, adversary)


def pmapped_train_steps(exp: Experiment) -> Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]:
  """`train.train_steps` with the experiment's `step_options` bound, pmapped as the trainer runs it on
  host batches: (replicated state, batches [devices, k, per_device_batch, ...]) -> (new replicated state,
  metrics [devices, k] each); the state passed in is donated. The benchmarks time this same function."""
  return jax.pmap(functools.partial(train.train_steps, **exp.step_options), **PMAP_OPTIONS)
