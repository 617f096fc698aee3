"""Preemption and Ctrl-C in the training loop: the job saves the current step and exits cleanly (code 0).

One process: a handler of SIGTERM (preemption) and SIGINT (Ctrl-C) sets a flag the loop polls after every
dispatch; a save in progress finishes first, so an interrupt never costs a checkpoint. Several processes (and
TPU VMs): JAX's coordination service already listens for the preemption notice (SIGTERM) on every host and
agrees on a step at which all of them stop (`multihost_utils.reached_preemption_sync_point`, which must be
asked at every step); no Python SIGTERM handler is installed then, since it would replace the service's,
and a SIGINT is passed on to it as a SIGTERM to this process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import jax
from jax.experimental import multihost_utils

# What each signal is called in the line the loop prints when it stops.
REASONS = {signal.SIGTERM: "preempted", signal.SIGINT: "interrupted"}


class PreemptedError(Exception):
  """Raised inside `Preemption.interrupting()` on SIGTERM or SIGINT: what was running is abandoned."""


class Preemption:
  """`reached(step)` is True once the job should save and stop (see the module docstring); `reason` says why
  ("preempted" for SIGTERM, "interrupted" for SIGINT). Inside `interrupting()` (work that needs no saving,
  such as the final evaluation of a saved state) a single process's signal raises PreemptedError at once
  instead. `restore` puts back the signal handlers it replaced (handlers are installed only from the main
  thread)."""

  def __init__(self) -> None:
    self.requested = False
    self.reason = REASONS[signal.SIGTERM]
    self._interrupt = False
    self._previous: dict[int, Any] = {}
    self._sync = jax.process_count() > 1
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT,) if self._sync else (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum: int, frame: Any) -> None:
    if not self.requested:
      self.reason = REASONS.get(signum, self.reason)
    if self._sync:  # the coordination service's SIGTERM handler tells every process
      self.requested = True
      os.kill(os.getpid(), signal.SIGTERM)
      return
    self.requested = True
    if self._interrupt:
      self._interrupt = False
      raise PreemptedError(signal.Signals(signum).name)

  @contextlib.contextmanager
  def interrupting(self) -> Iterator[None]:
    """Within the block, SIGTERM or SIGINT (one process) raises PreemptedError in the main thread right away;
    a signal that came before the block raises on entry."""
    if self.requested and not self._sync:
      raise PreemptedError(self.reason)
    self._interrupt = not self._sync and bool(self._previous)
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
    """Puts back the signal handlers that were in place before this object was made."""
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
