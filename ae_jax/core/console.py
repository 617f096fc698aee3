"""What a run shows on the console, and the full log kept beside it (the command-line tools' setup).

`setup(workdir)` sends every log record (INFO and up: absl, Orbax, tfds, jax, ae_jax) to WORKDIR/log.txt
and to the console only ae_jax's own messages, one plain line each: other libraries' warnings and errors,
Python warnings, and tracebacks printed from background threads (Orbax's and tensorstore's I/O threads
print many when a disk fills) go to the log only. An uncaught exception of the main thread (a bug) keeps
its traceback on the console. tfds' progress bars and preparation banners are off (`quiet_tfds`). Library
code never configures logging itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
from collections.abc import Iterator

LOG_NAME = "log.txt"


LOG_ONLY = {"console": False}  # `log.info(..., extra=LOG_ONLY)`: an ae_jax record for log.txt alone


class _ConsoleFilter(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    ours = record.name == "ae_jax" or record.name.startswith("ae_jax.")
    return ours and getattr(record, "console", True)


_background = logging.getLogger("background")  # tracebacks of other threads: the log file only


def _log_background_traceback(exc_type, exc, tb) -> None:
  _background.error("uncaught in a background thread", exc_info=(exc_type, exc, tb))


def _excepthook(exc_type, exc, tb) -> None:
  """The main thread's uncaught exceptions keep Python's traceback; other threads' go to the log."""
  if threading.current_thread() is threading.main_thread():
    sys.__excepthook__(exc_type, exc, tb)
  else:
    _log_background_traceback(exc_type, exc, tb)


def _route_background_errors() -> None:
  """Tracebacks that threads and native callbacks print to stderr go to the log instead."""
  sys.excepthook = _excepthook
  threading.excepthook = lambda args: _log_background_traceback(
    args.exc_type, args.exc_value, args.exc_traceback
  )
  sys.unraisablehook = lambda u: _background.error(
    "unraisable exception in %r", u.object, exc_info=(u.exc_type, u.exc_value, u.exc_traceback)
  )
  logging.captureWarnings(True)


class _ConsoleFormatter(logging.Formatter):
  def format(self, record: logging.LogRecord) -> str:
    text = record.getMessage()
    return f"warning: {text}" if record.levelno == logging.WARNING else text


def setup(workdir: str | None = None) -> str | None:
  """Configures logging for a command-line run (call it before JAX initialises its backends, whose
  messages it routes too); `workdir`: also keep every record in WORKDIR/log.txt (see `add_log_file`)."""
  from absl import logging as absl_logging

  root = logging.getLogger()
  for handler in list(root.handlers):
    root.removeHandler(handler)  # absl's handler prints every record, with its own prefix
  absl_logging.use_python_logging(quiet=True)
  root.setLevel(logging.INFO)
  console = logging.StreamHandler(sys.stderr)
  console.addFilter(_ConsoleFilter())
  console.setFormatter(_ConsoleFormatter())
  root.addHandler(console)
  for noisy in ("absl", "orbax", "jax", "tensorflow_datasets", "grain"):
    logging.getLogger(noisy).setLevel(logging.INFO)
  quiet_tfds()
  _route_background_errors()
  return add_log_file(workdir) if workdir is not None else None


class _LogFile(logging.FileHandler):
  """WORKDIR/log.txt. A record that cannot be written (its disk is full, which is often the error being
  reported) is dropped: logging's default prints a traceback to stderr for each one."""

  def __init__(self, path: str):
    super().__init__(path)
    self.dropped = 0  # records that could not be written

  def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
    self.dropped += 1


def add_log_file(workdir: str) -> str:
  """Keeps every log record (INFO and up) in WORKDIR/log.txt, appended across reruns; returns its path.
  Records that cannot be written (a full disk) are dropped without a word on the console."""
  path = os.path.join(workdir, LOG_NAME)
  handler = _LogFile(path)
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  logging.getLogger().addHandler(handler)
  return path


def quiet_tfds() -> None:
  """Turns off tfds' progress bars."""
  import tensorflow_datasets as tfds

  tfds.display_progress_bar(False)


@contextlib.contextmanager
def captured_stdout(logger: logging.Logger) -> Iterator[None]:
  """Runs the block with stdout captured and passed to `logger` at INFO (tfds prints its banners)."""
  buffer = io.StringIO()
  with contextlib.redirect_stdout(buffer):
    yield
  for line in buffer.getvalue().splitlines():
    if line.strip():
      logger.info(line.strip())
