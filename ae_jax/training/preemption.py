"""Preemption for the training loop: a preempted job saves a checkpoint and exits cleanly (exit code 0).

One process: a SIGTERM handler sets a flag the loop polls after every dispatch. Several processes (and
TPU VMs): JAX's coordination service already listens for the preemption notice (SIGTERM) on every host
and agrees on a step at which all of them stop (`multihost_utils.reached_preemption_sync_point`, which
must be asked at every step); no Python handler is installed then, since it would replace the service's.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import jax
from jax.experimental import multihost_utils


class PreemptedError(Exception):
  """Raised inside `Preemption.interrupting()` when SIGTERM arrives: what was running is abandoned."""


class Preemption:
  """`reached(step)` is True once the job should save and stop (see the module docstring). Inside
  `interrupting()` (work that needs no saving, such as the final evaluation of a saved state) a single
  process's SIGTERM raises PreemptedError at once instead. `restore` undoes the signal handler installed
  by a single process (only from the main thread)."""

  def __init__(self) -> None:
    self.requested = False
    self._interrupt = False
    self._previous = None
    self._sync = jax.process_count() > 1
    if not self._sync and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame) -> None:
    self.requested = True
    if self._interrupt:
      self._interrupt = False
      raise PreemptedError("SIGTERM")

  @contextlib.contextmanager
  def interrupting(self) -> Iterator[None]:
    """Within the block, SIGTERM (one process) raises PreemptedError in the main thread right away; a
    SIGTERM that came before the block raises on entry."""
    if self.requested and not self._sync:
      raise PreemptedError("SIGTERM")
    self._interrupt = not self._sync and self._previous is not None
    try:
      yield
    finally:
      self._interrupt = False

  def reached(self, step: int) -> bool:
    """Whether the job stops after `step`; with several processes call it at every step, in order."""
    if self._sync:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self.requested

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
