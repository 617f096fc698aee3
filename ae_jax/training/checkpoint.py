"""Orbax checkpoints of the full train state plus the config; the only module that imports orbax.

Layout: `WORKDIR/checkpoints/<step>/{state,config,digest}`. Orbax writes each step into a temporary directory
and renames it when complete, so a run killed mid-save leaves the previous checkpoint as the latest one; see
`Checkpointer` for what happens to damaged steps and failed saves. `digest` holds a sha256 of each array of
the state (`state_digest`), checked on every restore: Orbax itself does not notice a flipped bit or
overwritten bytes in its data files.
The state is saved unreplicated (one copy) and restores on any number of devices; with several processes
(multi-host), each process's copy becomes a global replicated array for Orbax, which writes it once.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ae_jax.core import workdir
from ae_jax.core.console import LOG_ONLY
from ae_jax.training import checkpoint_failures as failures
from ae_jax.training.checkpoint_failures import (  # noqa: F401  (part of this module's interface)
  CheckpointCorruptError,
  CheckpointMismatchError,
  CheckpointSaveError,
  NoValidCheckpointError,
)
from ae_jax.training.state_trees import (
  DIGEST_ALGORITHM,
  global_replicated,
  host_local,
  metadata_mismatch,
  rebuild,
  savable,
  state_digest,
)

log = logging.getLogger(__name__)

# Config entries that decide the shape of the state: a checkpoint can only resume a run that agrees on them.
_STRUCTURAL_KEYS = ("model", "optimizer.name", "data.name", "freeze")


def _lookup(config: dict, dotted: str) -> Any:
  node: Any = config
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def _all_processes_agree(ok: bool) -> bool:
  """True when `ok` holds on every process (an allgather when there are several)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils

  return bool(multihost_utils.process_allgather(np.int32(ok)).min())


class Checkpointer:
  """Saves and restores `TrainState` pytrees with the run's config (a JSON dict) beside them.

  Guarantees:
  * a step directory appears only once complete (Orbax writes `<step>.orbax-checkpoint-tmp*` and renames
    it), so a run killed mid-save leaves the previous step as the latest; temporary directories left by a
    killed or failed save are removed when the next run opens the directory;
  * whether a save succeeded is decided from the disk (its step directory exists), never from Orbax's
    error reporting alone, which can lose an asynchronous failure: a failed save raises
    CheckpointSaveError naming that step, its cause and the newest complete step, and removes its partial
    files. Asynchronously, a single process finds out at the first `check` after the background write
    ends, and every process at the next `save` or `wait` at the latest;
  * older steps are deleted only after a newer one is complete (at most `keep` complete steps are kept),
    so a failed save never costs a good checkpoint;
  * each step holds a sha256 of every array of the state (`state_digest`), computed before the save and
    written inside the step directory, so it is committed with the step; `restore` recomputes it from
    the restored arrays and treats a difference (a flipped bit, overwritten bytes) as a damaged step,
    like unreadable files or metadata (CheckpointCorruptError). A step saved before digests existed
    restores unverified (noted in the log);
  * `restore_latest` falls back to older steps past damaged ones, which it moves aside (renamed
    `<step>.corrupt`) and never deletes.

  Args:
    directory: where step directories go (created if missing); a local path.
    keep: how many of the newest complete checkpoints to keep.
    async_save: write in a background thread; `wait()` blocks until every save is on disk.
  """

  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._keep = int(keep)
    options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True
    )
    if jax.process_index() == 0:  # a killed or failed save's partial step: never a finished checkpoint
      for tmp in glob.glob(os.path.join(self.directory, "*.orbax-checkpoint-tmp*")):
        log.warning("removing %s, left by a save that did not finish", tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    handlers = {
      "state": ocp.StandardCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
      "digest": ocp.JsonCheckpointHandler(),
    }
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    self._async = async_save
    self._failed: int | None = None  # the step of a reported failed save; later waits do not raise it again
    self._pending: int | None = None  # the step of the save in flight
    self._errors = failures.OrbaxErrors()

  def all_steps(self) -> list[int]:
    """The steps whose directory is complete on disk, oldest first (a save in flight is not one)."""
    if not os.path.isdir(self.directory):
      return []
    names = os.listdir(self.directory)
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def _save_failed(self, step: int, error: BaseException | str | None) -> CheckpointSaveError:
    """The error for a failed save of `step`, once its partial files are removed."""
    if self._async:  # let the background save stop before its partial files are removed
      try:
        self._manager.wait_until_finished()
      except Exception:  # noqa: BLE001 - the failure being reported
        pass
    self._failed, self._pending = step, None
    self._remove_failed_partial()
    kept = self.latest_step()
    cause = failures.cause_text(error if error is not None else self._errors.first)
    where = (
      f"the newest complete checkpoint is step {kept} (kept); free space (or fix the cause) and rerun the "
      "same command to resume from it"
      if kept is not None
      else "no complete checkpoint exists yet; free space (or fix the cause) and rerun the same command"
    )
    return CheckpointSaveError(f"saving checkpoint {step} to {self.directory} failed: {cause}; {where}")

  def _finish_pending(self, *, block: bool) -> None:
    """Settles the save in flight: done when its step directory is complete on disk, else failed
    (CheckpointSaveError). Without `block`, returns at once while the background write goes on."""
    step, error = self._pending, None
    if step is None:
      return
    if block:
      try:
        self._manager.wait_until_finished()
      except Exception as e:  # noqa: BLE001 - Orbax and tensorstore raise assorted types for I/O failures
        error = e
    elif self._manager.is_saving_in_progress():
      return
    if os.path.isdir(os.path.join(self.directory, str(step))):
      if error is not None:
        log.warning("checkpoint %d is complete, but Orbax reported: %s", step, failures.cause(error))
      self._pending = None
      self._prune()
      return
    raise self._save_failed(step, error) from error

  def _prune(self) -> None:
    """Deletes all but the newest `keep` complete steps, except the steps a prior pins
    (`workdir.pinned_steps`: a prior trained on this run's codes depends on them)."""
    steps = self.all_steps()
    if len(steps) <= self._keep:
      return
    pinned = workdir.pinned_steps(self.directory)
    self._manager.reload()
    for step in steps[: len(steps) - self._keep]:
      if step in pinned:
        log.info("kept step %d (pinned by %s)", step, ", ".join(pinned[step]), extra=LOG_ONLY)
        continue
      self._manager.delete(step)

  def check(self) -> None:
    """Raises CheckpointSaveError if the asynchronous save in flight has failed. With several processes
    it does nothing (Orbax's progress check may wait on other processes): a failed save then surfaces at
    the next `save` or at `wait`."""
    if jax.process_count() > 1 or self._failed is not None:
      return
    self._finish_pending(block=False)

  def save(self, step: int, state: Any, config: dict) -> None:
    """Saves `state` (unreplicated pytree) and `config` (JSON-able dict) as checkpoint `step`; raises
    CheckpointSaveError when this save (synchronous) or the previous one (asynchronous) failed."""
    self._finish_pending(block=True)
    if step in self.all_steps():
      return  # already on disk (e.g. the final step coincides with a periodic save)
    state = savable(state)
    digest = {"algorithm": DIGEST_ALGORITHM, "arrays": state_digest(state)}
    self._pending, self._errors.first = step, None
    orbax_log = logging.getLogger("absl")
    if self._errors not in orbax_log.handlers:
      orbax_log.addHandler(self._errors)
    try:
      self._manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(global_replicated(state)),
          config=ocp.args.JsonSave(config),
          digest=ocp.args.JsonSave(digest),
        ),
        force=True,
      )
    except Exception as e:  # noqa: BLE001 - as in `_finish_pending`
      raise self._save_failed(step, e) from e
    if not self._async:
      self._finish_pending(block=True)

  def restore_config(self, step: int) -> dict:
    """The config saved with checkpoint `step`, its model section in today's layout (a run of an older
    version restores: `models.upgrade_config`)."""
    from ae_jax import models  # the model registry: only when a config is read back

    saved = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    return models.upgrade_config(saved)

  def restore(self, step: int, target: Any, config: dict) -> Any:
    """Restores checkpoint `step` into the structure, dtypes and shardings of `target` (e.g. a fresh state).

    Raises CheckpointMismatchError (without touching the checkpoint) when the saved run's model, optimizer
    or dataset differ from `config`, or when the saved state's tree (readable) does not fit `target`;
    raises CheckpointCorruptError when the step's files or metadata cannot be read, or its arrays differ
    from the digest saved with them.
    """
    try:
      saved = self.restore_config(step)
      metadata = self._manager.item_metadata(step)["state"]
    except Exception as e:  # noqa: BLE001 - Orbax and tensorstore raise assorted types for damaged files
      raise CheckpointCorruptError(
        f"step {step}: its config or metadata cannot be read ({failures.cause(e)})"
      ) from e
    tree = getattr(metadata, "tree", None)
    if tree is None:  # Orbax returns no metadata when state/_METADATA is missing or unreadable
      missing = not os.path.exists(os.path.join(self.directory, str(step), "state", "_METADATA"))
      raise CheckpointCorruptError(
        f"step {step}: its state metadata (state/_METADATA) {'is missing' if missing else 'cannot be read'}"
      )
    config = json.loads(json.dumps(config))  # compare as saved: tuples become lists
    for key in _STRUCTURAL_KEYS:
      if _lookup(saved, key) != _lookup(config, key):
        raise CheckpointMismatchError(
          f"{self.directory} holds step {step} of a run with {key}={_lookup(saved, key)!r}, but this config "
          f"has {key}={_lookup(config, key)!r}; use a new --workdir (the existing checkpoint is kept)"
        )
    trained_on, given = (_lookup(c, "data.tokenizer_fingerprint") for c in (saved, config))
    if trained_on and given and trained_on != given:  # a prior over the codes of another stage one
      raise CheckpointMismatchError(
        f"{self.directory} holds step {step} of a prior trained on the codes of stage one {trained_on} "
        f"(step-fingerprint), but this config's stage one is {given}; give the config the stage one it was "
        "trained on (prior_*.py:STAGE_ONE_WORKDIR,step=N), or train the prior afresh in a new --workdir "
        "(the existing checkpoint is kept)"
      )
    fields = savable(target)
    mismatch = metadata_mismatch(tree, fields)
    if mismatch is not None:
      raise CheckpointMismatchError(
        f"checkpoint {self.directory}/{step} does not fit this model's state ({mismatch}); use a new "
        "--workdir (the existing checkpoint is kept)"
      )
    try:
      restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(global_replicated(fields)))
      )
    except Exception as e:  # noqa: BLE001 - as above
      raise CheckpointCorruptError(f"step {step}: its state cannot be read ({failures.cause(e)})") from e
    state = host_local(restored["state"])
    self._verify(step, state)
    state = rebuild(target, state)
    log.info("restored step %d from %s", step, self.directory, extra=LOG_ONLY)
    return state

  def _saved_digest(self, step: int) -> dict[str, str] | None:
    """The per-array digest saved with `step`, or None for a step saved before digests existed (its Orbax
    step metadata names no digest item); CheckpointCorruptError when it is missing or unreadable."""
    if not os.path.isdir(os.path.join(self.directory, str(step), "digest")):
      try:
        items = self._manager.metadata(step).item_handlers
      except Exception:  # noqa: BLE001 - unreadable step metadata: the digest cannot be ruled out
        items = None
      if isinstance(items, dict) and "state" in items and "digest" not in items:
        return None
      raise CheckpointCorruptError(f"step {step}: its digest (digest/) is missing")
    try:
      saved = self._manager.restore(step, args=ocp.args.Composite(digest=ocp.args.JsonRestore()))["digest"]
    except Exception as e:  # noqa: BLE001 - as in `restore`
      raise CheckpointCorruptError(f"step {step}: its digest cannot be read ({failures.cause(e)})") from e
    arrays = saved.get("arrays") if isinstance(saved, dict) else None
    if not isinstance(arrays, dict) or saved.get("algorithm") != DIGEST_ALGORITHM:
      raise CheckpointCorruptError(f"step {step}: its digest is not a {DIGEST_ALGORITHM} digest of arrays")
    return arrays

  def _verify(self, step: int, state: Any) -> None:
    """Raises CheckpointCorruptError when the restored `state` differs from the digest saved with `step`."""
    expected = self._saved_digest(step)
    if expected is None:
      log.info("step %d was saved without a digest: restored unverified", step, extra=LOG_ONLY)
      return
    actual = state_digest(state)
    differ = [k for k in actual if expected.get(k) != actual[k]] + [k for k in expected if k not in actual]
    if differ:
      raise CheckpointCorruptError(
        f"step {step}: {len(differ)} of its {len(expected)} arrays "
        f"{'differs' if len(differ) == 1 else 'differ'} from the {DIGEST_ALGORITHM} digest saved with the "
        f"step ({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}): its files no longer hold the "
        "arrays that were saved"
      )

  def restore_latest(
    self, target: Any, config: dict, *, fresh_if_unreadable: bool = False
  ) -> tuple[int, Any]:
    """(step, state) of the newest checkpoint that restores, or (0, None) when there is none.

    A damaged step (unreadable, or its arrays differ from their digest) is skipped for the next older one,
    with one warning line naming it and the cause; once an older step restores, the damaged newer ones are
    moved aside (`<step>.corrupt`), so the run continues from the good step and never overwrites or prunes
    them. When no step can be read it raises NoValidCheckpointError, or with `fresh_if_unreadable` moves
    them all aside and starts afresh.
    CheckpointMismatchError (another experiment's checkpoint) is raised as it is.
    """
    failures: list[tuple[int, str]] = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, cause = self.restore(step, target, config), None
      except CheckpointCorruptError as e:
        state, cause = None, str(e).split(": ", 1)[-1]
      if not _all_processes_agree(cause is None):
        failures.append((step, cause or "unreadable on another process"))
        log.info(
          "checkpoint step %d in %s cannot be restored: %s",
          step,
          self.directory,
          failures[-1][1],
          extra=LOG_ONLY,
        )
        continue
      self._set_aside(failures)
      if failures:
        log.warning(
          "checkpoint step%s %s in %s cannot be restored (%s); resumed from step %d, and the damaged "
          "step%s moved aside as <step>.corrupt (kept, not deleted; details in log.txt)",
          "s" if len(failures) > 1 else "",
          ", ".join(str(s) for s, _ in failures),
          self.directory,
          failures[0][1],
          step,
          "s were" if len(failures) > 1 else " was",
        )
      else:
        log.info("restored step %d from %s", step, self.directory)
      return step, state
    if failures and not fresh_if_unreadable:
      steps = ", ".join(str(s) for s, _ in failures)
      raise NoValidCheckpointError(
        f"no checkpoint in {self.directory} can be restored (steps {steps}; newest: {failures[0][1]}); "
        "nothing was changed. Move the damaged steps away, or set config.fresh_start_if_unreadable=True to "
        "start afresh (they are then renamed <step>.corrupt)"
      )
    if failures:
      log.warning(
        "no checkpoint in %s can be restored (steps %s); starting afresh, the damaged steps moved aside "
        "as <step>.corrupt (config.fresh_start_if_unreadable; kept, not deleted)",
        self.directory,
        ", ".join(str(s) for s, _ in failures),
      )
    self._set_aside(failures)
    return 0, None

  def _set_aside(self, failures: list[tuple[int, str]]) -> None:
    """Renames each failed step's directory to `<step>.corrupt` (or `.corrupt.N`), out of Orbax's sight."""
    for step, _ in failures:
      source = os.path.join(self.directory, str(step))
      target, n = source + ".corrupt", 1
      while os.path.exists(target):
        target, n = f"{source}.corrupt.{n}", n + 1
      if jax.process_index() == 0 and os.path.exists(source):
        os.rename(source, target)
      log.info("moved the damaged checkpoint step %d aside to %s", step, target, extra=LOG_ONLY)
    if failures:
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("ae_jax: checkpoint steps moved aside")
      self._manager.reload()

  def wait(self) -> None:
    """Blocks until the save in flight is on disk; raises CheckpointSaveError if it failed (once: after a
    reported failure, later calls only log)."""
    if self._failed is not None:
      try:
        self._manager.wait_until_finished()
      except Exception as e:  # noqa: BLE001 - the failure already reported
        log.info("after the failed save: %s", failures.cause(e))
      return
    self._finish_pending(block=True)

  def _remove_failed_partial(self) -> None:
    if self._failed is not None and jax.process_index() == 0:
      failures.remove_partial(os.path.join(self.directory, f"{self._failed}.orbax-checkpoint-tmp*"))

  def close(self) -> None:
    try:
      self.wait()
    finally:
      logging.getLogger("absl").removeHandler(self._errors)
      try:
        self._manager.close()
      except Exception as e:  # noqa: BLE001 - after a reported failed save, its writers fail too
        if self._failed is None:
          raise
        log.info(
          "closing after the failed save of step %d: %s", self._failed, failures.cause(e), extra=LOG_ONLY
        )
      # Orbax's metadata writer can still recreate a failed step's temporary directory until it is closed
      self._remove_failed_partial()


class BestCheckpoint:
  """The state with the lowest value of one evaluation metric so far, in its own directory (one step kept).

  The evaluation metrics are saved with the checkpoint, so a resumed run keeps comparing against the same
  best and the best state's metrics need no second evaluation.
  """

  def __init__(self, directory: str, metric: str, *, async_save: bool = True):
    self.metric = metric
    self._ckpt = Checkpointer(directory, keep=1, async_save=async_save)
    self.step = self._ckpt.latest_step()
    self.metrics: dict[str, float] = {}
    if self.step is not None:
      saved = self._ckpt.restore_config(self.step)["best"]
      if saved["metric"] != metric:
        raise CheckpointMismatchError(
          f"{self._ckpt.directory} keeps the best state by {saved['metric']}, but config.keep_best is "
          f"'{metric}'; use the same metric or a new --workdir (the existing checkpoints are kept)"
        )
      self.metrics = saved["metrics"]

  @property
  def value(self) -> float:
    """The best value of the metric so far (inf before any save)."""
    return float(self.metrics.get(self.metric, float("inf")))

  def improves(self, metrics: dict[str, float]) -> bool:
    """Whether these evaluation metrics beat the best so far (so the state is worth saving)."""
    if self.metric not in metrics:
      raise CheckpointMismatchError(
        f"config.keep_best='{self.metric}' is not an evaluation metric; use one of {sorted(metrics)}"
      )
    return float(metrics[self.metric]) < self.value

  def save(self, step: int, metrics: dict[str, float], state: Any, config: dict) -> None:
    """Keeps `state` (unreplicated), evaluated as `metrics` at `step`, as the best (replacing the last)."""
    metrics = {k: float(v) for k, v in metrics.items()}
    self._ckpt.save(step, state, {**config, "best": {"metric": self.metric, "metrics": metrics}})
    self.step, self.metrics = step, metrics

  def restore(self, target: Any, config: dict) -> Any:
    """The best state, restored into the structure of `target`."""
    self._ckpt.wait()
    return self._ckpt.restore(self.step, target, config)

  def close(self) -> None:
    self._ckpt.close()
