"""The run's working directory: checked before anything is written, and held by one writer at a time.

`write_whole(path, write)` writes a file through a temporary file of its own and renames it into place;
`write_together({path: write, ...})` writes several files as one unit (all temporaries first, then the
renames, under a lock on their folder). A temporary file is named `<name>.<host>.<pid>.<random>.tmp`, so a
later write of the same file removes those a killed process of this host left behind
(`remove_stale_temporaries`). `prepare(path)` creates the folder and checks that it is a writable folder
(one WorkdirError line otherwise: a file in the way, no permission, a read-only filesystem).
`WorkdirLock` is an exclusive `flock` on WORKDIR/lock, which also records the holder's process id, host
and start time: a second run on the same workdir stops at once with one line naming the running process,
and a lock left by a process that died (kill -9) is released by the kernel and simply taken over. With
several hosts only process 0 takes it; `held()` is the workdir this process holds.

`pin(checkpoint_dir, step, holder)` records that `holder` (e.g. a prior's workdir) depends on checkpoint
`step`: a file in `pin_folder(checkpoint_dir)` (WORKDIR/pinned/checkpoints for WORKDIR/checkpoints), which
the checkpoint manager reads (`pinned_steps`) and never prunes those steps while the holder's folder exists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO

import jax

from ae_jax.core.errors import WorkdirError

LOCK_NAME = "lock"
PINS = "pinned"  # WORKDIR/pinned/<checkpoint folder>/<step>.<holder digest>.json
_HOST = socket.gethostname().replace(os.sep, "_")
_held: list[str] = []  # the workdirs this process holds a WorkdirLock on
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then restored
os.umask(_UMASK)


def _temporary(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> str:
  """A new temporary file beside `path` holding what `write(f)` writes; removed again when `write` fails."""
  folder, name = os.path.split(os.fspath(path))
  prefix = f"{name}.{_HOST}.{os.getpid()}."
  with tempfile.NamedTemporaryFile(dir=folder or ".", prefix=prefix, suffix=".tmp", delete=False) as f:
    try:
      os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # the mode open() gives a new file (tempfile's is 0600)
      write(f)
    except BaseException:
      f.close()
      os.unlink(f.name)
      raise
  return f.name


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
  """Removes the temporary files of `path` that a process of this host left when it was killed (its
  process id no longer runs); those of running processes and other hosts stay. Returns the removed ones."""
  folder, name = os.path.split(os.path.abspath(os.fspath(path)))
  try:
    entries = os.listdir(folder)
  except OSError:
    return []
  removed = []
  for entry in entries:
    if not (entry.startswith(name + ".") and entry.endswith(".tmp")):
      continue
    parts = entry[len(name) + 1 : -len(".tmp")].rsplit(".", 2)
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit() or _alive(int(parts[1])):
      continue
    try:
      os.unlink(os.path.join(folder, entry))
      removed.append(os.path.join(folder, entry))
    except OSError:
      pass
  return removed


def write_whole(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
  """Writes a file through `write(f)` into a temporary file of its own beside `path` (a unique name, so
  processes and hosts sharing a file system never write into one), then renames it over `path`: readers
  see the old file or the whole new one. The temporaries a killed writer of `path` left are removed
  first. OSError when the folder cannot be written (no temporary file is left then)."""
  remove_stale_temporaries(path)
  os.replace(_temporary(path, write), path)


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
  """An exclusive `flock` on the folder itself (no lock file), released on exit or when the process dies."""
  fd = os.open(folder, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)


def write_together(files: Mapping[str, Callable[[IO[bytes]], None]], *, stale: Sequence[str] = ()) -> None:
  """Writes several files of one folder as one unit: every file into a temporary of its own first (any
  failure removes them all and leaves the old files as they were), then, holding `folder_lock`, removes
  the old files after the first (whose rename replaces it) and those in `stale`, and renames the new ones
  into place in order. Writers that share the
  folder commit one after another, so the files found together are always of one write; a process killed
  in the middle of the renames leaves some of the new files and none of the old ones."""
  paths = [os.path.abspath(os.fspath(p)) for p in files]
  folders = {os.path.dirname(p) for p in paths}
  if len(folders) != 1:
    raise ValueError(f"write_together writes into one folder, got {sorted(folders)}")
  for path in paths:
    remove_stale_temporaries(path)
  written: list[str] = []
  try:
    for path, write in zip(paths, files.values(), strict=True):
      written.append(_temporary(path, write))
  except BaseException:
    for temporary in written:
      with contextlib.suppress(OSError):
        os.unlink(temporary)
    raise
  with folder_lock(folders.pop()):
    for old in [*paths[1:], *stale]:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(old)
    for temporary, path in zip(written, paths, strict=True):
      os.replace(temporary, path)


def prepare(path: str, flag: str = "--workdir") -> str:
  """Creates `path` if needed and checks it is a folder this process can write to; returns it absolute.
  `flag` names the option that gave the path in the messages."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"{flag} {path} is a file, not a folder; choose another {flag}")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
      pass
  except OSError as e:
    reason = "read-only filesystem" if e.errno == errno.EROFS else e.strerror or str(e)
    raise WorkdirError(f"{flag} {path} cannot be written ({reason}); choose a writable {flag}") from None
  return path


def held() -> str | None:
  """The workdir this process holds a WorkdirLock on (the run it is training), or None."""
  return _held[-1] if _held else None


def pin_folder(checkpoint_dir: str) -> str:
  """Where the pins of a checkpoint folder live: WORKDIR/pinned/<its name> for WORKDIR/<its name>."""
  checkpoint_dir = os.path.abspath(os.path.expanduser(checkpoint_dir))
  return os.path.join(os.path.dirname(checkpoint_dir), PINS, os.path.basename(checkpoint_dir))


def pin(checkpoint_dir: str, step: int, holder: str, **details: str) -> str:
  """Records that `holder` (a folder, e.g. a prior's workdir) depends on checkpoint `step` of
  `checkpoint_dir`, with `details` (e.g. its fingerprint); returns the pin file. OSError when it cannot be
  written."""
  holder = os.path.abspath(holder)
  digest = hashlib.sha256(holder.encode()).hexdigest()[:12]
  folder = pin_folder(checkpoint_dir)
  path = os.path.join(folder, f"{int(step)}.{digest}.json")
  text = json.dumps({"step": int(step), "holder": holder, **details}, sort_keys=True) + "\n"
  try:
    with open(path) as f:
      if f.read() == text:
        return path
  except OSError:
    pass
  os.makedirs(folder, exist_ok=True)
  write_whole(path, lambda f: f.write(text.encode()))
  return path


def pinned_steps(checkpoint_dir: str) -> dict[int, list[str]]:
  """{step: the holders that depend on it} from the pins of `checkpoint_dir`; a pin whose holder's folder
  no longer exists (the prior was deleted) or that cannot be read pins nothing."""
  folder = pin_folder(checkpoint_dir)
  try:
    names = sorted(os.listdir(folder))
  except OSError:
    return {}
  steps: dict[int, list[str]] = {}
  for name in names:
    if not name.endswith(".json"):
      continue
    try:
      with open(os.path.join(folder, name)) as f:
        record = json.load(f)
      step, holder = int(record["step"]), str(record["holder"])
    except (OSError, ValueError, KeyError, TypeError):
      continue
    if os.path.isdir(holder):
      steps.setdefault(step, []).append(holder)
  return steps


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
    _held.append(os.path.dirname(self.path))

  def release(self) -> None:
    """Releases the lock (the file stays, emptied: removing it could let two runs lock different files)."""
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)
    os.close(self._fd)  # closing releases the flock
    self._fd = None
    held_path = os.path.dirname(self.path)
    if held_path in _held:
      _held.remove(held_path)

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
