"""Files written whole (`ae_jax.core.workdir`): several files as one unit, the temporaries of a killed writer
removed, and the pins that keep a checkpoint step a prior depends on from being pruned."""

import errno
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from ae_jax.core import workdir
from ae_jax.core.errors import AEJaxError, WorkdirError
from ae_jax.generation import samplers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _temporaries(folder) -> list[str]:
  return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


def test_a_killed_writer_leaves_no_temporary_file_after_the_next_write(tmp_path):
  """kill -9 in the middle of write_whole leaves its temporary file; the next write of that file (or
  remove_stale_temporaries) removes it, while a running writer's temporary file stays."""
  path = tmp_path / "test.npz"
  code = (
    "import sys, time\n"
    "from ae_jax.core import workdir\n"
    "def write(f):\n"
    "  f.write(b'half'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
    f"workdir.write_whole({str(path)!r}, write)\n"
  )
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "writing"
    left = _temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith("test.npz.")
    assert workdir.remove_stale_temporaries(path) == []  # its writer still runs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    proc.kill()
    proc.wait()
  assert _temporaries(tmp_path) == left  # what a kill leaves
  workdir.write_whole(path, lambda f: np.savez(f, x=np.arange(3)))
  assert _temporaries(tmp_path) == [] and np.load(path)["x"].tolist() == [0, 1, 2]
  assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~workdir._UMASK)  # as open() makes a file


def test_files_written_together_are_of_one_write_or_the_old_ones(tmp_path):
  """write_together: a failure while writing any file leaves the old files and no temporary file;
  writers racing on one folder leave both files of one of them."""
  a, b, stale = tmp_path / "a.npz", tmp_path / "b.txt", tmp_path / "stale.json"

  def pair(n):
    return {a: lambda f: np.savez(f, n=n), b: lambda f: f.write(str(n).encode())}

  workdir.write_together(pair(0))
  stale.write_text("{}")

  def full(f):
    f.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")

  with pytest.raises(OSError, match="No space left"):
    workdir.write_together({a: lambda f: np.savez(f, n=1), b: full}, stale=[stale])
  assert int(np.load(a)["n"]) == 0 and b.read_text() == "0" and stale.exists()
  assert _temporaries(tmp_path) == []

  def writer(first):
    for n in range(first, first + 15):
      workdir.write_together(pair(n), stale=[stale])

  threads = [threading.Thread(target=writer, args=(first,)) for first in (100, 200)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert int(np.load(a)["n"]) == int(b.read_text()) in (114, 214)
  assert not stale.exists() and _temporaries(tmp_path) == []


def test_samples_are_written_as_one_unit_and_a_full_disk_keeps_the_old_ones(tmp_path, monkeypatch):
  """samplers.write_samples: samples.npz and samples.png carry one sample id; a full disk while writing
  either is one line naming what OUT keeps, the old files intact and no temporary file left."""
  grid = np.zeros((4, 4, 1), np.uint8)
  first = samplers.write_samples(str(tmp_path), {"images": np.ones((2, 4, 4, 1))}, grid)
  (tmp_path / "quality.json").write_text("{}")
  assert samplers.sample_ids(str(tmp_path)) == {
    "samples.npz": first.sample_id,
    "samples.png": first.sample_id,
  }
  before = {n: (tmp_path / n).read_bytes() for n in ("samples.npz", "samples.png", "quality.json")}
  real = workdir._temporary
  for failing in ("samples.npz", "samples.png"):

    def full(path, write, failing=failing):
      if os.path.basename(path) == failing:
        raise OSError(errno.ENOSPC, "No space left on device")
      return real(path, write)

    monkeypatch.setattr(workdir, "_temporary", full)
    with pytest.raises(WorkdirError) as e:
      samplers.write_samples(str(tmp_path), {"images": np.zeros((2, 4, 4, 1))}, grid)
    message = str(e.value)
    assert isinstance(e.value, AEJaxError) and "\n" not in message
    assert "No space left on device" in message
    assert f"keeps the earlier samples.npz and samples.png (sample id {first.sample_id})" in message
    assert {n: (tmp_path / n).read_bytes() for n in before} == before and _temporaries(tmp_path) == []
  monkeypatch.setattr(workdir, "_temporary", real)
  second = samplers.write_samples(str(tmp_path), {"images": np.zeros((2, 4, 4, 1))}, grid)
  assert samplers.sample_ids(str(tmp_path)) == {
    "samples.npz": second.sample_id,
    "samples.png": second.sample_id,
  }
  assert second.sample_id != first.sample_id and not (tmp_path / "quality.json").exists()  # it was of the old
  empty = tmp_path / "empty"
  empty.mkdir()
  monkeypatch.setattr(workdir, "_temporary", full)
  with pytest.raises(WorkdirError, match="nothing was written to"):
    samplers.write_samples(str(empty), {"images": np.zeros((2, 4, 4, 1))}, grid)
  assert os.listdir(empty) == []


def test_a_pin_keeps_a_step_while_its_holder_exists(tmp_path):
  """workdir.pin records a holder of a checkpoint step; pinned_steps lists it while the holder's folder
  exists (a deleted prior pins nothing); a pin is written once (the same content is not rewritten)."""
  checkpoints, prior = tmp_path / "stage_one" / "checkpoints", tmp_path / "prior"
  prior.mkdir()
  path = workdir.pin(str(checkpoints), 150, str(prior), fingerprint="150-abc")
  assert os.path.dirname(path) == str(tmp_path / "stage_one" / "pinned" / "checkpoints")
  assert workdir.pinned_steps(str(checkpoints)) == {150: [str(prior)]}
  mtime = os.stat(path).st_mtime_ns
  assert workdir.pin(str(checkpoints), 150, str(prior), fingerprint="150-abc") == path
  assert os.stat(path).st_mtime_ns == mtime
  assert workdir.pinned_steps(str(tmp_path / "stage_one" / "best")) == {}
  prior.rmdir()
  assert workdir.pinned_steps(str(checkpoints)) == {}


def test_an_out_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / "samples"
  path.write_text("")
  with pytest.raises(WorkdirError, match=r"--out .*samples is a file, not a folder; choose another --out"):
    workdir.prepare(str(path), flag="--out")
