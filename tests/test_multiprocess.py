"""Multi-host: two JAX processes (2 CPU devices each) on loopback train, checkpoint, resume and stop on
preemption together, and train a prior over a stage one's codes and sample it.

Each child writes its output to its own file (a child that fills a pipe nobody reads would block while
the other waits for it in a collective), the whole group has one deadline, and every child still running
when a test ends or fails is killed.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import process_env, train_tiny_vqvae

pytestmark = pytest.mark.slow  # starts processes: in make test, not in make test-fast

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE = 240  # seconds for one group of processes


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _own_cache(env, i):
  """env with a compilation cache directory of process i's own (the processes compile side by side)."""
  cache = env.get("JAX_COMPILATION_CACHE_DIR")
  return {**env, "JAX_COMPILATION_CACHE_DIR": os.path.join(cache, f"process{i}")} if cache else env


@contextlib.contextmanager
def _group(workdir, steps, local_devices=2, nproc=2, checkpoint_every=3, stage_one=""):
  """Starts the processes; yields (procs, logs); kills any still running on the way out."""
  port = _free_port()
  env = process_env(local_devices)
  logs = [workdir.parent / f"{workdir.name}.process{i}.log" for i in range(nproc)]
  procs = []
  try:
    for i, log in enumerate(logs):
      args = [
        WORKER,
        str(i),
        str(port),
        str(workdir),
        str(steps),
        str(local_devices),
        str(nproc),
        str(checkpoint_every),
        *([stage_one] if stage_one else []),
      ]
      with open(log, "w") as f:
        procs.append(
          subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=_own_cache(env, i), stdout=f, stderr=subprocess.STDOUT
          )
        )
    yield procs, logs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _results(procs, logs):
  deadline = time.monotonic() + DEADLINE
  for p in procs:
    try:
      p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      pytest.fail(f"the processes did not finish in {DEADLINE} s:\n" + _tails(logs))
  for p, log in zip(procs, logs, strict=True):
    assert p.returncode == 0, f"exit code {p.returncode}:\n" + _tails([log])
  return [json.loads(log.read_text().strip().splitlines()[-1]) for log in logs]


def _tails(logs):
  return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())


def _run(workdir, steps, **kwargs):
  with _group(workdir, steps, **kwargs) as (procs, logs):
    return _results(procs, logs)


def test_two_processes_resume_and_match_one_process(tmp_path):
  """2 processes x 2 devices: stopping at step 3 and resuming to 6 equals an unbroken run, which equals one
  process with 4 devices on the same global batches; both processes hold the same parameters."""
  full = _run(tmp_path / "full", 6)
  _run(tmp_path / "split", 3)
  resumed = _run(tmp_path / "split", 6)
  (single,) = _run(tmp_path / "single", 6, local_devices=4, nproc=1)
  assert [r["step"] for r in full + resumed] == [6, 6, 6, 6]
  for a, b in ((full[0], full[1]), (full[0], resumed[0]), (resumed[0], resumed[1])):
    for x, y in zip(a["params"], b["params"], strict=True):
      np.testing.assert_array_equal(x, y)
  for x, y in zip(full[0]["params"], single["params"], strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert full[0]["test_loss"] == pytest.approx(single["test_loss"], rel=1e-6)
  assert sorted(os.listdir(tmp_path / "full" / "checkpoints")) == ["3", "6"]


def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(tmp_path):
  """The coordination service spreads the preemption notice: both processes save the same step and exit
  0, and a rerun finishes from there with the parameters of an unbroken run."""
  workdir = tmp_path / "run"
  with _group(workdir, 4000, checkpoint_every=10_000) as (procs, logs):
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + DEADLINE
    while not (metrics.exists() and metrics.read_text().count("\n") >= 5):
      if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
        pytest.fail("training did not start:\n" + _tails(logs))
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    stopped = _results(procs, logs)
  assert stopped[0]["preempted"] and stopped[1]["preempted"]
  assert stopped[0]["step"] == stopped[1]["step"] < 4000
  assert sorted(os.listdir(workdir / "checkpoints")) == [str(stopped[0]["step"])]
  for x, y in zip(stopped[0]["params"], stopped[1]["params"], strict=True):
    np.testing.assert_array_equal(x, y)


def test_two_processes_encode_train_a_prior_and_sample_as_one_process(tmp_path):
  """Both processes encode the stage one's codes and write the same cache file (atomically: one file per
  split, nothing left half-written); the prior they train matches one process with 4 devices, and both
  draw the same samples."""
  stage_one = str(tmp_path / "stage_one")
  train_tiny_vqvae(stage_one, 4)
  two = _run(tmp_path / "two", 6, stage_one=stage_one)
  (one,) = _run(tmp_path / "one", 6, local_devices=4, nproc=1, stage_one=stage_one)
  assert [r["step"] for r in two] == [6, 6]
  for x, y in zip(two[0]["params"], two[1]["params"], strict=True):
    np.testing.assert_array_equal(x, y)
  for name, x, y in zip(two[0]["param_names"], two[0]["params"], one["params"], strict=True):
    # The attention's key bias adds q.b to every logit of a query: softmax cancels it, so its gradient
    # is rounding noise, which Adam scales to steps of the learning rate's size.
    if not name.endswith("['key']['bias']"):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)
  assert two[0]["test_loss"] == pytest.approx(one["test_loss"], rel=1e-6)
  assert two[0]["samples"] == two[1]["samples"] and np.shape(two[0]["samples"]) == (8, 4)
  caches = {}
  for name in ("two", "one"):
    (folder,) = (tmp_path / f"{name}.codes").iterdir()  # one stage one fingerprint
    assert sorted(f.name for f in folder.iterdir()) == ["test.npz", "train.npz"]
    caches[name] = {f.name: np.load(f)["tokens"] for f in folder.iterdir()}
  for split, tokens in caches["one"].items():
    np.testing.assert_array_equal(caches["two"][split], tokens)
