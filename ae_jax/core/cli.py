"""What the command-line tools share: one `error:` line for the project's errors, distributed setup, and
the report printed after a run or an evaluation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ae_jax.core.errors import AEJaxError


def run_or_exit(fn: Callable[[], Any]) -> Any:
  """Runs `fn`; a project error (bad config, data, workdir, checkpoint) becomes one `error:` line and exit
  code 1. Any other exception is a bug and keeps its traceback."""
  try:
    return fn()
  except AEJaxError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(1)


def initialize(
  distributed: bool, coordinator: str | None, processes: int | None, process_id: int | None
) -> None:
  """jax.distributed.initialize() for multi-host runs (auto-detected on TPU pods and SLURM)."""
  if distributed:
    import jax

    jax.distributed.initialize(coordinator, processes, process_id)


def report(step: int, result: Any, workdir: str, *, evaluation: str | None = None) -> None:
  """Prints the final metrics, each evaluator's own lines, and where the files went: a run's checkpoints,
  metrics and results.json, or with `evaluation` (the eval_<step>.json an evaluation of a checkpoint
  wrote) that file alone."""
  scalars = ", ".join(f"{k} {v:.5g}" for k, v in sorted(result.metrics.items()))
  print(f"step {step}: {scalars}")
  for line in result.lines:
    print(line)
  if evaluation is None:
    print(
      f"checkpoints: {workdir}/checkpoints\n"
      f"metrics:     {workdir}/metrics.jsonl (TensorBoard: {workdir}/tensorboard; log: {workdir}/log.txt)\n"
      f"results:     {workdir}/results.json"
    )
  else:
    print(f"results:     {evaluation}")
  if result.files:
    print(f"files:       {', '.join(result.files)}")
