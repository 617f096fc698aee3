"""SIGTERM handling for the training loop: a preempted job saves a checkpoint and exits cleanly."""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preemption:
  """Turns SIGTERM into a flag the loop polls (installed only from the main thread; `restore` undoes it)."""

  def __init__(self) -> None:
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame) -> None:
    self.requested = True

  def agreed(self, step: int, every: int) -> bool:
    """True when any process was signalled; processes compare flags every `every` steps."""
    if jax.process_count() == 1:
      return self.requested
    if step % every:
      return False
    return bool(multihost_utils.process_allgather(np.int32(self.requested)).max())

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
