"""How checkpoint saves and restores fail: the error types, the one-line cause of a failure, and cleanup.

`cause` reads the most telling line out of an exception chain from Orbax and tensorstore (an OS error's
text, a known cause, the innermost tensorstore status); `OrbaxErrors` catches what Orbax's background
threads log during an asynchronous save; `remove_partial` removes a failed save's partial files.
"""

from __future__ import annotations

import glob
import logging
import re
import shutil
import time

from ae_jax.core.errors import AEJaxError


class CheckpointMismatchError(AEJaxError, ValueError):
  """The checkpoint in a workdir belongs to a different experiment than the config being run."""


class CheckpointCorruptError(AEJaxError):
  """A checkpoint step cannot be read (truncated, deleted or unreadable files)."""


class NoValidCheckpointError(AEJaxError):
  """Every checkpoint step of a workdir is unreadable."""


class CheckpointSaveError(AEJaxError, OSError):
  """Writing a checkpoint failed (e.g. the disk is full); the previous checkpoint is intact."""


_KNOWN_CAUSES = (
  "No space left on device",
  "Read-only file system",
  "Permission denied",
  "Disk quota exceeded",
)


_STATUS = re.compile(r"^[A-Z][A-Z_]{3,}: ")  # a tensorstore / absl status, e.g. "OUT_OF_RANGE: Error reading"


def cause(error: BaseException) -> str:
  """The most telling one-line cause of an exception chain: an OS error's text (e.g. "No space left on
  device"), a known cause named anywhere in the chain, the innermost tensorstore status message (what was
  read and why it failed), else the first line of the first error's message (200 characters at most)."""
  chain, e = [], error
  while e is not None and e not in chain:
    chain.append(e)
    if isinstance(e, OSError) and e.strerror:
      return e.strerror + (f": {e.filename}" if e.filename else "")
    e = e.__cause__ or e.__context__
  for known in _KNOWN_CAUSES:
    if any(known in str(e) for e in chain):
      return known
  statuses = [str(e).strip() for e in chain if _STATUS.match(str(e).strip())]
  first = (statuses[-1] if statuses else (str(error).strip().splitlines() or [""])[0]).splitlines()[0]
  text = first if statuses else f"{type(error).__name__}: {first}"
  return re.sub(r' (in OCDBT database at|of|at) local file "[^"]*"', "", text)[:200]


def cause_text(error: BaseException | str | None) -> str:
  """`cause` of an exception, or of a logged error message (a string), or "unknown (see log.txt)"."""
  if error is None:
    return "cause unknown (see the workdir's log.txt)"
  if isinstance(error, BaseException):
    return cause(error)
  for known in _KNOWN_CAUSES:
    if known in error:
      return known
  return (error.strip().splitlines() or [""])[0][:200]


def remove_partial(pattern: str, seconds: float = 10.0, settle: float = 0.5) -> None:
  """Removes the directories matching `pattern` (a failed save's partial files, never a finished step).
  tensorstore's writer threads can still be finishing writes after Orbax reports the failure, and a write
  recreates its directory, so the removal is repeated until nothing has matched for `settle` seconds (at
  most `seconds` in all)."""
  deadline = time.monotonic() + seconds
  clear_since = None
  while time.monotonic() < deadline:
    found = glob.glob(pattern)
    for tmp in found:
      shutil.rmtree(tmp, ignore_errors=True)
    now = time.monotonic()
    if found:
      clear_since = None
    elif clear_since is None:
      clear_since = now
    elif now - clear_since >= settle:
      return
    time.sleep(0.05)


class OrbaxErrors(logging.Handler):
  """Keeps the first error Orbax logs while a save is in flight: an asynchronous save's failure is logged
  by Orbax's background threads (and may never be raised), so its cause is read from here."""

  def __init__(self) -> None:
    super().__init__(logging.ERROR)
    self.first: str | None = None

  def emit(self, record: logging.LogRecord) -> None:
    if self.first is None:
      self.first = record.getMessage()
