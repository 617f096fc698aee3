"""The training loop: train (resuming where a run stopped), evaluate, checkpoint, and stop cleanly.

    summary = loop.train_and_evaluate(config, workdir)

The devices never wait for the host: where the training split fits (`config.data.on_device`), it lives on
the devices and each step gathers its own batch there (`device_input`); otherwise batches are assembled
and placed ahead of time by a background thread (`config.prefetch`). `config.steps_per_dispatch`
optimisation steps run per dispatch, up to IN_FLIGHT dispatches are queued, and metrics stay on the
devices until a log step fetches them all at once. Logging, evaluation and checkpoints happen between
dispatches.

What happens when things fail:
* a non-finite loss or gradient leaves the state untouched, and the run stops at the next log or
  checkpoint step (NonFiniteLossError) without saving anything after the last good checkpoint;
* SIGTERM (preemption) or SIGINT (Ctrl-C) saves the current step and returns with `preempted`; rerunning
  resumes exactly;
* a failed checkpoint save stops the run at once (CheckpointSaveError), the previous checkpoint intact;
* an unreadable latest checkpoint falls back to the previous one (see `checkpoint.Checkpointer`);
* one run writes a workdir at a time (`workdir.WorkdirLock`).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from ae_jax import evaluators
from ae_jax.core import parallel, workdir
from ae_jax.core.errors import AEJaxError, ConfigError
from ae_jax.runner import config as config_checks
from ae_jax.runner import experiment
from ae_jax.training import checkpoint, device_input, metrics_log, train
from ae_jax.training.preemption import PreemptedError, Preemption

# Dispatches queued on the devices at most. Two keep an accelerator busy while the host enqueues the next;
# an unbounded queue of collective programs can deadlock XLA:CPU's in-process collectives (devices of
# different queued executions wait for each other once its thread pool is exhausted).
IN_FLIGHT = 2

log = logging.getLogger(__name__)


class NonFiniteLossError(AEJaxError, FloatingPointError):
  """The loss or gradient became NaN/inf; the run stopped and kept its last good checkpoint."""


class Profile:
  """A jax.profiler trace of the steps (start, start + steps] into `directory` (TensorBoard's profile
  plugin reads it from the run's tensorboard/ folder); steps 0: none."""

  def __init__(self, directory: str, start: int, steps: int):
    self.directory, self.start, self.stop, self.active = directory, start, start + steps, False
    self.enabled = steps > 0

  def before(self, step: int) -> None:
    if self.enabled and not self.active and self.start <= step < self.stop:
      jax.profiler.start_trace(self.directory)
      self.active = True

  def after(self, step: int, outputs: Any) -> None:
    if self.active and step >= self.stop:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active, self.enabled = False, False


def mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
  """Host means over the steps of dispatched metrics ([devices, k] each; equal on every device after
  pmean): one device-to-host transfer for all of them."""
  host = jax.device_get(pending)
  rows = {k: np.concatenate([np.asarray(m[k])[0] for m in host]) for k in host[0]}
  out = {k: float(np.mean(v)) for k, v in rows.items()}
  out["learning_rate"] = float(rows["learning_rate"][-1])
  out["nonfinite"] = float(np.sum(rows["nonfinite"]))
  return out


def run_evaluators(
  built: dict[str, tuple[int, Callable]], rstate: Any, step: int, *, final: bool, only: Callable[[int], bool]
) -> evaluators.Result:
  """Runs the evaluators whose interval `only(every)` accepts on the evaluation weights (the weight EMA
  when the run keeps one: `train.evaluation_state`); their results under their names."""
  rstate = train.evaluation_state(rstate)
  return evaluators.merge(
    [evaluators.prefixed(name, fn(rstate, step, final)) for name, (every, fn) in built.items() if only(every)]
  )


def write_results(
  path: str, step: int, result: evaluators.Result, name: str = "results.json", *, weights: str = "params"
) -> str:
  """WORKDIR/results.json (or `name`): the step, every evaluator's metrics and details, the files, and
  which weights were evaluated ("params", or "ema" with a weight EMA)."""
  out = os.path.join(path, name)
  if jax.process_index() == 0:
    content = {"step": int(step), **result.metrics, **result.details, "files": result.files}
    content["weights"] = weights
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
      json.dump(content, f, indent=1, default=float)
    os.replace(tmp, out)
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir_path: str) -> dict[str, Any]:
  """Trains (resuming from WORKDIR/checkpoints if present), evaluates, and returns a summary.

  The evaluators of config.evals run every `every` steps and all of them after training (metrics
  "<name>/<metric>"); the final ones are written to WORKDIR/results.json. With config.keep_best, the
  returned state, step and metrics are those of the best evaluated state, on which the evaluators that run
  only after training run. Returns {"step", "state" (unreplicated), "model", "dataset", "metrics" (final
  scalar metrics, empty when preempted), "results" (the final evaluators.Result), "preempted",
  "compile_seconds" (the first dispatch)}.
  """
  config_checks.check_config(
    config, num_processes=jax.process_count(), local_devices=jax.local_device_count()
  )
  path = workdir.prepare(workdir_path)
  with workdir.WorkdirLock(path):
    return _train(config, path)


def evaluate_checkpoint(
  config: ml_collections.ConfigDict,
  workdir_path: str,
  *,
  step: int | None = None,
  best: bool = False,
  names: list[str] | None = None,
) -> tuple[int, evaluators.Result, str]:
  """Runs the evaluators of config.evals (or only `names`) on a run's checkpoint, without training.

  The checkpoint is WORKDIR/checkpoints' latest (past unreadable ones), the given `step`, or with `best`
  the state config.keep_best kept. Writes WORKDIR/eval_<step>.json (the evaluators' files as
  WORKDIR/eval_<step>_<name>.png); returns (step, result, its path).
  """
  config_checks.check_config(
    config, num_processes=jax.process_count(), local_devices=jax.local_device_count()
  )
  path = workdir.prepare(workdir_path)
  directory = os.path.join(path, "best" if best else "checkpoints")
  if not os.path.isdir(directory):
    raise checkpoint.NoValidCheckpointError(
      f"{path} has no {'best state' if best else 'checkpoint'} to evaluate"
    )
  exp = experiment.setup(config, path)
  state = exp.state
  ckpt = checkpoint.Checkpointer(directory, keep=config.keep_checkpoints, async_save=False)
  try:
    if step is None:
      step, restored = ckpt.restore_latest(state, config.to_dict())
      if not step:
        raise checkpoint.NoValidCheckpointError(f"{directory} has no checkpoint to evaluate")
    elif step not in ckpt.all_steps():
      raise checkpoint.NoValidCheckpointError(f"{directory} has no step {step}; it has {ckpt.all_steps()}")
    else:
      restored = ckpt.restore(step, state, config.to_dict())
  finally:
    ckpt.close()
  built = evaluators.build(config, exp.context(f"eval_{step}_"))
  unknown = set(names or ()) - set(built)
  if unknown:
    raise ConfigError(f"no evaluator named {sorted(unknown)} in config.evals (it has {sorted(built)})")
  chosen = {n: built[n] for n in (names or built)}
  result = run_evaluators(chosen, parallel.replicate(restored), step, final=True, only=lambda every: True)
  weights = "params" if restored.ema_params is None else "ema"
  return step, result, write_results(path, step, result, f"eval_{step}.json", weights=weights)


class _Feed:
  """Runs one dispatch of `size` steps: on batches the host pipeline assembles and places ahead
  (`parallel.Prefetcher`), or, device-resident (`device_input`), on batches each step gathers on the
  devices. `bytes_placed` counts the host-to-device bytes of input placed during training."""

  def __init__(self, exp: experiment.Experiment, input_plan: device_input.Plan, sizes: list[int], start: int):
    config, dataset = exp.config, exp.dataset
    self.bytes_placed = 0
    self._prefetch = None
    if input_plan.enabled:
      self._resident = device_input.Resident(config, input_plan)
      self._p_steps = device_input.pmapped_steps(
        self._resident, dataset.info.device_preprocess, **exp.step_options
      )
      return
    batches = device_input.host_batches(config, dataset, start)
    self._prefetch = parallel.Prefetcher(batches, sizes, int(config.prefetch))
    self._p_steps = experiment.pmapped_train_steps(exp)

  def dispatch(self, rstate: Any, step: int, size: int) -> tuple[Any, dict[str, jax.Array]]:
    """Steps [step, step + size): (new replicated state, metrics [devices, size] each)."""
    if self._prefetch is not None:
      batch = self._prefetch.next()
      self.bytes_placed += sum(x.nbytes for x in jax.tree.leaves(batch))
      with jax.transfer_guard_host_to_device("disallow"):  # the step reads only what is on the devices
        return self._p_steps(rstate, batch)
    resident = self._resident
    placed = resident.order_bytes_placed
    order = resident.order_for(step, size)
    self.bytes_placed += resident.order_bytes_placed - placed
    with jax.transfer_guard("disallow"):  # no transfer of any kind: the batch is made on the devices
      return self._p_steps(rstate, resident.arrays, order, resident.slots, size)

  def close(self) -> None:
    if self._prefetch is not None:
      self._prefetch.close()


def _final_evaluation(
  built: dict[str, tuple[int, Callable]],
  best: checkpoint.BestCheckpoint | None,
  rstate: Any,
  state: Any,
  step: int,
  writer: metrics_log.MetricWriter,
  config_dict: dict,
) -> tuple[evaluators.Result, int, Any]:
  """Every evaluator on the final state (or, with keep_best, on the best one): (result, step, state)."""
  periodic = run_evaluators(built, rstate, step, final=True, only=lambda every: every > 0)
  writer.write(step, periodic.metrics)
  if best is not None and best.improves(periodic.metrics):
    best.save(step, periodic.metrics, state, config_dict)
  elif best is not None and best.step != step:  # an earlier evaluated state was better: report it
    state, step = best.restore(state, config_dict), best.step
    periodic = evaluators.Result(dict(best.metrics))
    rstate = parallel.replicate(state)
    writer.message(f"reporting the state of step {step}: lowest {best.metric} ({best.value:.5g})")
  rest = run_evaluators(built, rstate, step, final=True, only=lambda every: every == 0)
  return evaluators.merge([periodic, rest]), step, state


def _train(config: ml_collections.ConfigDict, path: str) -> dict[str, Any]:
  exp = experiment.setup(config, path)
  state = exp.state
  ckpt = checkpoint.Checkpointer(
    os.path.join(path, "checkpoints"), keep=config.keep_checkpoints, async_save=config.async_checkpoints
  )
  config_dict = config.to_dict()
  start, restored = ckpt.restore_latest(
    state, config_dict, fresh_if_unreadable=bool(config.fresh_start_if_unreadable)
  )
  state = restored if start else state
  best = None
  if config.keep_best:
    best = checkpoint.BestCheckpoint(
      os.path.join(path, "best"), config.keep_best, async_save=config.async_checkpoints
    )
  input_plan = device_input.plan(config, exp.dataset)
  built = evaluators.build(config, exp.context())
  intervals = tuple(every for every, _ in built.values())

  rstate = parallel.replicate(state)
  sizes = list(
    parallel.dispatch_sizes(
      start,
      config.total_steps,
      int(config.steps_per_dispatch),
      (config.log_every, config.checkpoint_every, *intervals),
      stops=tuple(s for s in (config.profile.start, config.profile.start + config.profile.steps) if s)
      if config.profile.steps
      else (),
    )
  )
  feed = _Feed(exp, input_plan, sizes, start)
  log.info("%s", input_plan.line)
  writer = metrics_log.MetricWriter(path, total_steps=config.total_steps, start_step=start)
  preemption = Preemption()
  pending: list[dict[str, jax.Array]] = []  # metrics since the last log line
  pending_check: list[dict[str, jax.Array]] = []  # metrics not yet checked for non-finite losses
  timer_start, timed_steps, compile_seconds = time.perf_counter(), 0, 0.0
  step, preempted, final = start, False, evaluators.Result()

  def check_finite() -> None:
    """Raises if any step since the last check was non-finite (those steps did not change the state)."""
    if not pending_check:
      return
    host = jax.device_get([m["nonfinite"] for m in pending_check])
    flags = np.concatenate([np.asarray(f)[0] for f in host])
    pending_check.clear()
    if flags.any():
      first = int(np.argmax(flags > 0))
      bad = step - len(flags) + 1 + first
      kept = ckpt.latest_step()
      where = (
        f"the last good checkpoint (step {kept}) is kept in" if kept else "no checkpoint is saved yet in"
      )
      fix = (
        "The batch itself held a NaN or infinity: check the data (config.data) for non-finite values"
        if flags[first] > 1
        else "Lower config.optimizer.learning_rate or set config.optimizer.grad_clip_norm"
      )
      raise NonFiniteLossError(
        f"loss became non-finite at step {bad}; training stopped and {where} {ckpt.directory}. {fix}, then "
        "rerun the same command to resume from it."
      )

  def log_train_metrics() -> None:
    nonlocal timer_start, timed_steps
    check_finite()
    metrics = mean_metrics(pending)
    metrics.pop("nonfinite")
    elapsed = max(time.perf_counter() - timer_start, 1e-9)
    if timed_steps:
      metrics["examples_per_sec"] = timed_steps * config.batch_size / elapsed
    writer.write(step, metrics, train_window=True)
    pending.clear()
    timer_start, timed_steps = time.perf_counter(), 0

  profile = Profile(os.path.join(path, "tensorboard"), config.profile.start, config.profile.steps)
  in_flight: collections.deque = collections.deque()
  try:
    for size in sizes:
      profile.before(step)
      rstate, metrics = feed.dispatch(rstate, step, size)
      in_flight.append(metrics)
      if len(in_flight) > IN_FLIGHT:
        jax.block_until_ready(in_flight.popleft())  # waits for the device, transfers nothing
      first, step = step == start, step + size
      pending.append(metrics)
      pending_check.append(metrics)
      if first:  # keep compilation out of examples/sec
        jax.block_until_ready(metrics)
        compile_seconds = time.perf_counter() - timer_start
        timer_start, timed_steps = time.perf_counter(), 0
      else:
        timed_steps += size
      writer.advance(size)
      profile.after(step, metrics)
      # every step is offered to the preemption check (several processes agree on one of them)
      preempted = any([preemption.reached(s) for s in range(step - size + 1, step + 1)])
      ckpt.check()
      last = step == config.total_steps
      if step % config.log_every == 0 or last or preempted:
        log_train_metrics()
      due = lambda every: every and step % every == 0  # noqa: B023, E731 - called at once
      if not last and any(due(every) for every in intervals):
        eval_start = time.perf_counter()
        evals = run_evaluators(built, rstate, step, final=False, only=due).metrics
        writer.write(step, evals)
        if best is not None and best.improves(evals):
          best.save(step, evals, parallel.unreplicate(rstate), config_dict)
        timer_start += time.perf_counter() - eval_start  # keep evaluation out of examples/sec
        preempted = preempted or (jax.process_count() == 1 and preemption.requested)  # during evaluation
      if (config.checkpoint_every and step % config.checkpoint_every == 0) or last or preempted:
        check_finite()  # never save a state after an unchecked step
        ckpt.save(step, parallel.unreplicate(rstate), config_dict)
      if preempted:
        writer.message(
          f"{preemption.reason}: saved step {step} to {ckpt.directory}; rerun the command to resume"
        )
        break
    feed.close()
    ckpt.wait()
    state = parallel.unreplicate(rstate)
    if not preempted:
      try:
        with preemption.interrupting():  # the state is saved: a SIGTERM abandons the evaluation at once
          final, step, state = _final_evaluation(built, best, rstate, state, step, writer, config_dict)
        write_results(path, step, final, weights="params" if state.ema_params is None else "ema")
      except PreemptedError:
        preempted, final = True, evaluators.Result()
        writer.message(
          f"{preemption.reason} during the final evaluation: step {step} is saved in {ckpt.directory}; "
          "rerun the command to evaluate it"
        )
  finally:
    failing = sys.exc_info()[1] is not None
    profile.close()
    feed.close()
    preemption.restore()
    try:
      writer.close()
    except OSError as e:  # e.g. the disk that failed a save is full: the run's own error is the one to see
      if not failing:
        raise
      log.warning("closing the metrics files failed too: %s", e)
    try:
      if best is not None:
        best.close()
    finally:
      ckpt.close()
  return {
    "step": step,
    "state": state,
    "model": exp.model,
    "dataset": exp.dataset,
    "metrics": final.metrics,
    "results": final,
    "preempted": preempted,
    "compile_seconds": compile_seconds,
    "input": input_plan.line,
    "input_bytes_placed": feed.bytes_placed,
  }
