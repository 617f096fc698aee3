"""Preemption for the training loop: a preempted job saves a checkpoint and exits cleanly (exit code 0).

One process: a SIGTERM handler sets a flag the loop polls after every dispatch. Several processes (and
TPU VMs): JAX's coordination service already listens for the preemption notice (SIGTERM) on every host
and agrees on a step at which all of them stop (`multihost_utils.reached_preemption_sync_point`, which
must be asked at every step); no Python handler is installed then, since it would replace the service's.
"""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class Preemption:
  """`reached(step)` is True once the job should save and stop (see the module docstring). `restore`
  undoes the signal handler installed by a single process (only from the main thread)."""

  def __init__(self) -> None:
    self.requested = False
    self._previous = None
    self._sync = jax.process_count() > 1
    if not self._sync and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame) -> None:
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether the job stops after `step`; with several processes call it at every step, in order."""
    if self._sync:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self.requested

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
