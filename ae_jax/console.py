"""What a run shows on the console, and the full log kept beside it (the command-line tools' setup).

`setup(workdir)` sends every log record (INFO and up: absl, Orbax, tfds, jax, ae_jax) to WORKDIR/log.txt
and to the console only ae_jax's messages and everyone's warnings, one plain line each; tfds' progress
bars and preparation banners are off (`quiet_tfds`). Library code never configures logging itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator

LOG_NAME = "log.txt"


class _ConsoleFilter(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.startswith("ae_jax")


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
  return add_log_file(workdir) if workdir is not None else None


def add_log_file(workdir: str) -> str:
  """Keeps every log record (INFO and up) in WORKDIR/log.txt, appended across reruns; returns its path."""
  path = os.path.join(workdir, LOG_NAME)
  handler = logging.FileHandler(path)
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
