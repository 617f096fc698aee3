"""Fault injection in one process: damaged checkpoints (unreadable, or arrays that differ from their digest)
fall back, failed saves stop the run, Ctrl-C sets the stop flag, one writer per workdir, bad workdirs, and
metrics logs that survive resumption. (Killed and interrupted processes: test_fault_processes.)"""

import contextlib
import errno
import glob
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest
from conftest import process_env

from ae_jax.core import console, workdir
from ae_jax.core.errors import WorkdirError
from ae_jax.runner import loop
from ae_jax.training import checkpoint
from ae_jax.training.preemption import PreemptedError, Preemption

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _params(summary):
  return jax.device_get(summary["state"].params)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 16-step run (checkpoints every 4 steps) of tiny_config."""
  from conftest import make_tiny_config

  config = make_tiny_config()
  config.total_steps = 16
  return loop.train_and_evaluate(config, str(tmp_path_factory.mktemp("reference")))


@pytest.fixture(scope="module")
def twelve_steps(tmp_path_factory):
  """The workdir of tiny_config's first 12 steps (checkpoints 4, 8, 12); tests damage copies of it."""
  from conftest import make_tiny_config

  config = make_tiny_config()
  path = tmp_path_factory.mktemp("twelve_steps")
  loop.train_and_evaluate(config, str(path))
  return path


def _copy_then_damage(twelve_steps, path, damage):
  shutil.copytree(twelve_steps, path, dirs_exist_ok=True)
  damage(path / "checkpoints" / "12")


def _truncate_data_files(step_dir):
  """Cuts the state's data files (OCDBT's merged `state/d/*`, where the arrays are read from) to a third."""
  files = glob.glob(str(step_dir / "state" / "d" / "*"))
  assert files
  for name in files:
    with open(name, "r+b") as f:
      f.truncate(os.path.getsize(name) // 3)


def _delete_state(step_dir):
  subprocess.run(["rm", "-rf", str(step_dir / "state")], check=True)


def _empty_manifest(step_dir):
  open(step_dir / "state" / "manifest.ocdbt", "w").close()


def _flip_one_bit(step_dir):
  """Flips one bit of an array's bytes in the largest data file, where Orbax restores it without an error
  (asserted: the fault the digest is there to catch)."""
  state = step_dir / "state"
  before = jax.tree.leaves(ocp.StandardCheckpointer().restore(state))
  name = max(glob.glob(str(state / "**" / "d" / "*"), recursive=True), key=os.path.getsize)
  data = bytearray(pathlib.Path(name).read_bytes())
  for offset in range(len(data) // 2, len(data) // 2 + 64):  # the middle of the file: array bytes
    data[offset] ^= 0x10
    pathlib.Path(name).write_bytes(data)
    with contextlib.suppress(Exception):
      after = jax.tree.leaves(ocp.StandardCheckpointer().restore(state))
      if any((a != b).any() for a, b in zip(before, after, strict=True)):
        return
    data[offset] ^= 0x10
  pytest.fail("no single bit flip restored silently with different values")


def _delete_metadata(step_dir):
  """The state's tree metadata only: the arrays are intact, but the step cannot be described."""
  os.remove(step_dir / "state" / "_METADATA")


def _delete_digest(step_dir):
  shutil.rmtree(step_dir / "digest")


@pytest.mark.parametrize(
  "damage, cause",
  [
    (_truncate_data_files, ""),
    (_delete_state, ""),
    (_empty_manifest, ""),
    (_flip_one_bit, "differs from the sha256 digest saved with the step"),
    (_delete_metadata, "its state metadata (state/_METADATA) is missing"),
    (_delete_digest, "its digest (digest/) is missing"),
  ],
)
@pytest.mark.training
def test_damaged_latest_checkpoint_falls_back_to_the_previous_step(
  tiny_config, tmp_path, twelve_steps, reference, damage, cause, caplog
):
  _copy_then_damage(twelve_steps, tmp_path, damage)
  tiny_config.total_steps = 16
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path))
  chex.assert_trees_all_equal(_params(reference), _params(resumed))  # resumed from step 8, exactly
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "ae_jax" in r.name]
  assert len(warnings) == 1, warnings  # one line on the console; the details are in log.txt
  assert (
    "step 12" in warnings[0] and "cannot be restored" in warnings[0] and "resumed from step 8" in warnings[0]
  )
  assert cause in warnings[0] and "does not fit" not in warnings[0]  # damaged, not another model's
  assert "\n" not in warnings[0] and "<bound method" not in warnings[0]
  assert os.path.isdir(tmp_path / "checkpoints" / "12.corrupt")  # moved aside, not deleted
  assert checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=3).all_steps() == [8, 12, 16]


@pytest.mark.training
def test_a_step_saved_without_a_digest_restores_unverified(
  tiny_config, tmp_path, twelve_steps, reference, caplog
):
  """A step saved before digests existed (Orbax's step metadata names no digest item) still resumes."""
  caplog.set_level(logging.INFO, logger="ae_jax.training.checkpoint")
  shutil.copytree(twelve_steps, tmp_path, dirs_exist_ok=True)
  step_dir = tmp_path / "checkpoints" / "12"
  shutil.rmtree(step_dir / "digest")
  metadata = json.loads((step_dir / "_CHECKPOINT_METADATA").read_text())
  del metadata["item_handlers"]["digest"]
  (step_dir / "_CHECKPOINT_METADATA").write_text(json.dumps(metadata))
  tiny_config.total_steps = 16
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path))
  chex.assert_trees_all_equal(_params(reference), _params(resumed))
  assert "step 12 was saved without a digest: restored unverified" in caplog.messages  # log.txt only
  assert not glob.glob(str(tmp_path / "checkpoints" / "*.corrupt"))


@pytest.mark.training
def test_no_readable_checkpoint_is_one_error_or_a_fresh_start_when_asked(tiny_config, tmp_path):
  tiny_config.total_steps, tiny_config.keep_checkpoints = 4, 1
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  _delete_state(tmp_path / "checkpoints" / "4")
  tiny_config.total_steps = 8
  with pytest.raises(
    checkpoint.NoValidCheckpointError, match="no checkpoint in .* can be restored.*nothing was"
  ):
    loop.train_and_evaluate(tiny_config, str(tmp_path))
  assert os.path.isdir(tmp_path / "checkpoints" / "4")  # left as it was
  tiny_config.fresh_start_if_unreadable = True
  summary = loop.train_and_evaluate(tiny_config, str(tmp_path))
  assert summary["step"] == 8 and os.path.isdir(tmp_path / "checkpoints" / "4.corrupt")


@pytest.mark.training
def test_another_experiments_checkpoint_is_still_refused(tiny_config, tmp_path):
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  tiny_config.model.code_dim = 8
  with pytest.raises(checkpoint.CheckpointMismatchError, match="use a new --workdir"):
    loop.train_and_evaluate(tiny_config, str(tmp_path))
  assert not glob.glob(str(tmp_path / "checkpoints" / "*.corrupt"))


def test_ctrl_c_requests_a_stop_like_sigterm():
  """SIGINT sets the flag the loop polls (no KeyboardInterrupt), abandons an `interrupting()` block, and
  `restore` puts the handler it found back (Python's own, or SIG_IGN under a shell that ignores SIGINT)."""
  before = signal.getsignal(signal.SIGINT)
  stop = Preemption()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested and stop.reached(1) and stop.reason == "interrupted"
    with pytest.raises(PreemptedError), stop.interrupting():
      pass
  finally:
    stop.restore()
  assert signal.getsignal(signal.SIGINT) is before


def _fail_saves_of_step(monkeypatch, step):
  original = ocp.StandardCheckpointHandler.async_save

  async def failing(self, directory, *args, **kwargs):
    if f"/{step}." in str(directory) or str(directory).rstrip("/").endswith(f"/{step}"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return await original(self, directory, *args, **kwargs)

  monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", failing)


@pytest.mark.parametrize("async_save", [True, False])
@pytest.mark.training
def test_a_failed_save_stops_the_run_and_keeps_the_previous_checkpoint(
  tiny_config, tmp_path, reference, monkeypatch, async_save
):
  tiny_config.total_steps, tiny_config.async_checkpoints = 16, async_save
  _fail_saves_of_step(monkeypatch, 8)
  with pytest.raises(checkpoint.CheckpointSaveError) as e:
    loop.train_and_evaluate(tiny_config, str(tmp_path))
  message = str(e.value)
  assert (
    "saving checkpoint 8" in message
    and "No space left on device" in message
    and "the newest complete checkpoint is step 4 (kept)" in message
  )
  assert "\n" not in message
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=3)
  assert ckpt.all_steps() == [4] and not glob.glob(str(tmp_path / "checkpoints" / "*tmp*"))
  ckpt.close()
  monkeypatch.undo()
  resumed = loop.train_and_evaluate(tiny_config, str(tmp_path))  # the same command resumes from step 4
  chex.assert_trees_all_equal(_params(reference), _params(resumed))


@contextlib.contextmanager
def _small_filesystem(path, size):
  """A real tmpfs of `size` mounted at `path` (skips the test where mounting is not allowed)."""
  path.mkdir()
  mounted = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
  )
  if mounted.returncode:
    pytest.skip("mounting a tmpfs is not allowed here (needs root and mount permission)")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=False)


def _assert_names_the_failed_and_the_newest_complete_step(message, checkpoints, every):
  """The message names the first step that is not on disk and the newest one that is; no partial files."""
  failed = int(re.search(r"saving checkpoint (\d+)", message).group(1))
  kept = re.search(r"the newest complete checkpoint is step (\d+)", message)
  ckpt = checkpoint.Checkpointer(str(checkpoints), keep=3)
  try:
    assert ckpt.latest_step() == (int(kept.group(1)) if kept else None), message
    assert failed == (ckpt.latest_step() or 0) + every and failed not in ckpt.all_steps(), message
  finally:
    ckpt.close()
  assert not glob.glob(str(checkpoints / "*tmp*")), os.listdir(checkpoints)


@pytest.mark.parametrize("async_save", [True, False])
@pytest.mark.training
def test_a_full_disk_names_the_save_that_failed(tiny_config, tmp_path, async_save):
  """A real small filesystem (a 600 KB tmpfs) fills up after a checkpoint or two of ~200 KB."""
  with _small_filesystem(tmp_path / "small", "600k") as mount:
    tiny_config.model.hidden = (128,)  # ~200 KB of parameters and Adam moments a checkpoint
    tiny_config.total_steps, tiny_config.async_checkpoints = 40, async_save
    with pytest.raises(checkpoint.CheckpointSaveError, match="No space left on device") as e:
      loop.train_and_evaluate(tiny_config, str(mount / "run"))
    _assert_names_the_failed_and_the_newest_complete_step(
      str(e.value), mount / "run" / "checkpoints", tiny_config.checkpoint_every
    )


@pytest.mark.slow
def test_a_full_disk_during_asynchronous_saves_is_one_line_on_the_console(tmp_path):
  """The command line on a 3 MB tmpfs, asynchronous saves of ~1 MB: stderr holds the progress bar and the
  one error line; Orbax's and tensorstore's tracebacks go to log.txt."""
  with _small_filesystem(tmp_path / "small", "3m") as mount:
    command = [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=tests/tiny_experiment.py:steps=300,ckpt=50,hidden=256x256",
      f"--workdir={mount / 'run'}",
      "--config.async_checkpoints=True",
    ]
    env = process_env(2)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
    progress = ("step/s", "s/step", "?step")
    # the console: the input line, the progress bar and the one error line
    messages = [x for x in lines if not any(p in x for p in progress) and not x.startswith("input: ")]
    assert done.returncode == 1 and len(messages) == 1 and messages[0].startswith("error: "), done.stderr[
      -3000:
    ]
    _assert_names_the_failed_and_the_newest_complete_step(messages[0], mount / "run" / "checkpoints", 50)
    assert "No space left on device" in (mount / "run" / "log.txt").read_text()  # the details are kept


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_log_file_on_a_full_disk_drops_records_without_a_console_traceback(tmp_path, capfd):
  """log.txt on a full disk (here /dev/full, where every write fails with ENOSPC) must not print logging's
  "--- Logging error ---" traceback for each record: the console keeps its one error line."""
  (tmp_path / "log.txt").symlink_to("/dev/full")
  path = console.add_log_file(str(tmp_path))
  handler = logging.getLogger().handlers[-1]
  try:
    logging.getLogger("ae_jax.test").error("a record that cannot be written")
    assert handler.dropped == 1 and path == str(tmp_path / "log.txt")
  finally:
    logging.getLogger().removeHandler(handler)
    with contextlib.suppress(OSError):
      handler.close()
  assert "Logging error" not in capfd.readouterr().err


@pytest.mark.training
def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tiny_config, tmp_path):
  path = workdir.prepare(str(tmp_path))
  with workdir.WorkdirLock(path):
    with pytest.raises(WorkdirError, match=rf"in use by process {os.getpid()} on .*; wait for it"):
      loop.train_and_evaluate(tiny_config, path)
  assert not os.path.exists(tmp_path / "checkpoints")  # the refused run wrote nothing
  # a process that died while holding the lock left its record; the kernel released its flock
  dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
  (tmp_path / "lock").write_text(json.dumps({"pid": int(dead), "host": "gone", "started": "earlier"}))
  assert loop.train_and_evaluate(tiny_config, path)["step"] == 12


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda p: (p.write_text("not a folder"), p)[1], "is a file, not a folder"),
    (lambda p: p, "cannot be written"),
  ],
)
def test_bad_workdirs_are_one_line(tiny_config, tmp_path, monkeypatch, make, match):
  path = make(tmp_path / "w")
  if match == "cannot be written":  # root writes through permissions: refuse the write itself

    def refuse(*args, **kwargs):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(workdir.tempfile, "NamedTemporaryFile", refuse)
  with pytest.raises(WorkdirError, match=match) as e:
    loop.train_and_evaluate(tiny_config, str(path))
  assert "\n" not in str(e.value)


def _events(path):
  """(step, kind) of every record of a TensorBoard event file: "purge" (a SessionLog START, after which
  TensorBoard drops the earlier files' events from that step on), "scalar" or "other"."""
  from tensorboardX.proto import event_pb2

  out = []
  with open(path, "rb") as f:
    while header := f.read(12):
      (length,) = struct.unpack("<Q", header[:8])
      event = event_pb2.Event.FromString(f.read(length))
      f.read(4)
      kind = {"session_log": "purge", "summary": "scalar"}.get(event.WhichOneof("what"), "other")
      out.append((event.step, kind))
  return out


@pytest.mark.training
def test_metrics_have_one_row_per_step_after_a_resume(tiny_config, tmp_path):
  """The run killed after logging step 9 but checkpointed at 8 logged rows the rerun logs again: the
  rerun drops them first, and tells TensorBoard to drop that run's events after step 8."""
  tiny_config.update({"log_every": 3, "checkpoint_every": 8, "total_steps": 9})
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  subprocess.run(["rm", "-rf", str(tmp_path / "checkpoints" / "9")], check=True)  # as if killed before it
  tiny_config.total_steps = 12
  loop.train_and_evaluate(tiny_config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  train_steps = [r["step"] for r in rows if "loss" in r]
  assert train_steps == [3, 6, 9, 12]
  second = sorted(glob.glob(str(tmp_path / "tensorboard" / "events.*")))[-1]
  events = [e for e in _events(second) if e[1] != "other"]
  assert events[0] == (9, "purge") and all(step >= 9 for step, _ in events)  # step 9 on is replaced


@pytest.mark.training
def test_nonfinite_loss_before_any_checkpoint_says_so(tiny_config, tmp_path, monkeypatch):
  from ae_jax.training import train

  monkeypatch.setattr(train, "loss_weights", lambda c: {"mse": lambda s: jnp.where(s >= 1, jnp.nan, 1.0)})
  with pytest.raises(loop.NonFiniteLossError, match="no checkpoint is saved yet"):
    loop.train_and_evaluate(tiny_config, str(tmp_path))


def test_a_file_is_written_whole_or_not_at_all(tmp_path):
  """workdir.write_whole: the new content replaces the file at once; a write that fails leaves the old
  file and no temporary file."""
  path = tmp_path / "cache.bin"
  workdir.write_whole(path, lambda f: f.write(b"old"))

  def fails(f):
    f.write(b"half")
    raise OSError(28, "No space left on device")

  with pytest.raises(OSError, match="No space left"):
    workdir.write_whole(path, fails)
  assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["cache.bin"]
  workdir.write_whole(path, lambda f: f.write(b"new"))
  assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["cache.bin"]
