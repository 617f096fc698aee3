"""The run's working directory: checked before anything is written, and held by one writer at a time.

`write_whole(path, write)` writes a file through a temporary file of its own and renames it into place.
`prepare(path)` creates the folder and checks that it is a writable folder (one WorkdirError line
otherwise: a file in the way, no permission, a read-only filesystem). `WorkdirLock` is an exclusive
`flock` on WORKDIR/lock, which also records the holder's process id, host and start time: a second run on
the same workdir stops at once with one line naming the running process, and a lock left by a process
that died (kill -9) is released by the kernel and simply taken over. With several hosts only process 0
takes it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from typing import IO

import jax

from ae_jax.core.errors import WorkdirError

LOCK_NAME = "lock"


def write_whole(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
  """Writes a file through `write(f)` into a temporary file of its own beside `path` (a unique name, so
  processes and hosts sharing a file system never write into one), then renames it over `path`: readers
  see the old file or the whole new one. OSError when the folder cannot be written."""
  folder, name = os.path.split(os.fspath(path))
  with tempfile.NamedTemporaryFile(dir=folder or ".", prefix=name + ".", suffix=".tmp", delete=False) as f:
    try:
      write(f)
    except BaseException:
      f.close()
      os.unlink(f.name)
      raise
  os.replace(f.name, path)


def prepare(path: str) -> str:
  """Creates `path` if needed and checks it is a folder this process can write to; returns it absolute."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"--workdir {path} is a file, not a folder; choose another --workdir")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
      pass
  except OSError as e:
    reason = "read-only filesystem" if e.errno == errno.EROFS else e.strerror or str(e)
    raise WorkdirError(
      f"--workdir {path} cannot be written ({reason}); choose a writable --workdir"
    ) from None
  return path


class WorkdirLock:
  """An exclusive lock on WORKDIR/lock while a run writes there (a context manager; no-op off process 0)."""

  def __init__(self, path: str):
    self.path = os.path.join(path, LOCK_NAME)
    self._fd: int | None = None

  def acquire(self) -> None:
    """Takes the lock or raises WorkdirError naming the process that holds it."""
    if jax.process_index() != 0:
      return
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read(fd)
      os.close(fd)
      who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
      since = f" (since {holder['started']})" if holder.get("started") else ""
      raise WorkdirError(
        f"{os.path.dirname(self.path)} is in use by {who}{since}; wait for it to finish or stop it, or use "
        "another --workdir"
      ) from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(record) + "\n").encode())
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    """Releases the lock (the file stays, emptied: removing it could let two runs lock different files)."""
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)
    os.close(self._fd)  # closing releases the flock
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc: object) -> None:
    self.release()


def _read(fd: int) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 4096).decode() or "{}")
  except (OSError, ValueError):
    return {}
