"""Where metrics go: `WORKDIR/metrics.jsonl`, TensorBoard event files, and the console progress bar.

Only process 0 writes. Each call to `write(step, metrics)` appends one JSON object with "step" and the
metric names; evaluation metrics carry their evaluator's prefix ("validation/", "test/"). A training row
(`write(..., train_window=True)`) holds means over the steps since the previous one and says how many in
"steps_averaged": `log_every`, fewer for the first row after a resume (the steps since the resume) and
for the last row of a run whose length is not a multiple of it.

What metrics.jsonl holds: rows in step order, at most one row per step and set of metric names, no row
without a metric. A run that resumes from step s first drops the rows after s (written by the interrupted
run past its last checkpoint) and tells TensorBoard to discard events after s, so both show one row per
step and one continuous curve; a row it would write again at step s (the final evaluation of a finished
run that is rerun) is not written twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

import jax
import tqdm

from ae_jax.core.console import LOG_ONLY

log = logging.getLogger(__name__)


class MetricWriter:
  """Writes scalar metrics to metrics.jsonl and TensorBoard, and drives a tqdm progress bar."""

  def __init__(self, workdir: str, *, total_steps: int, start_step: int, show_progress: bool = True):
    self.enabled = jax.process_index() == 0
    self._jsonl = self._tb = self._bar = None
    self._window = 0  # steps advanced since the last training row
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    # the metric names of the rows at the latest step written: a row with the same names is not repeated
    self._last_step, self._names_at_last = start_step, _drop_rows_after(path, start_step)
    self._jsonl = open(path, "a")
    try:
      from tensorboardX import SummaryWriter

      # purge_step: TensorBoard drops the earlier files' events from this step on (one continuous curve)
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)
    except ImportError:  # optional: the run goes on without event files
      log.warning("tensorboardX is not installed: no TensorBoard event files are written")
    if show_progress:
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

  def write(self, step: int, metrics: Mapping[str, float], *, train_window: bool = False) -> None:
    """Records scalar `metrics` at `step` (non-finite values are written as null in JSON).

    train_window: the metrics are means over the training steps advanced since the previous training
    row; the row records their number as "steps_averaged" (metrics.jsonl only). Nothing is written for
    no metrics, nor a second time for the same step and metric names.
    """
    names = frozenset(metrics)
    if train_window:
      steps, self._window = self._window, 0
    if not self.enabled or not metrics:
      return
    if step != self._last_step:
      self._last_step, self._names_at_last = step, set()
    if names in self._names_at_last:
      log.info("step %d: these metrics are in metrics.jsonl already; not written again", step, extra=LOG_ONLY)
      return
    self._names_at_last.add(names)
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    if train_window:
      row["steps_averaged"] = float(steps)
    self._jsonl.write(json.dumps({k: (v if math.isfinite(v) else None) for k, v in row.items()}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(k, float(v), int(step))
    if self._bar is not None:
      shown = {k: v for k, v in row.items() if k in ("loss", "test/loss", "examples_per_sec")}
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

  def advance(self, steps: int = 1) -> None:
    """Counts `steps` optimisation steps done (the progress bar and the next training row's window)."""
    self._window += steps
    if self._bar is not None:
      self._bar.update(steps)

  def message(self, text: str) -> None:
    """Prints a line above the progress bar (process 0 only)."""
    if self.enabled:
      (self._bar.write if self._bar is not None else print)(text)

  def close(self) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    self._jsonl.close()


def _drop_rows_after(path: str, step: int) -> set[frozenset[str]]:
  """Rewrites metrics.jsonl without its rows after `step` (atomically: a temporary file renamed); returns
  the metric names of each row kept at `step` itself."""
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    lines = f.readlines()
  keep, at_step = [], set()
  for line in lines:
    try:
      row = json.loads(line)
      row_step = row["step"]
    except (ValueError, KeyError, TypeError):
      continue  # a line cut short by a kill
    if row_step <= step:
      keep.append(line if line.endswith("\n") else line + "\n")
    if row_step == step:
      at_step.add(frozenset(row) - {"step", "steps_averaged"})
  if len(keep) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)
  return at_step
