"""Multi-host: two JAX processes (2 CPU devices each) on loopback train, checkpoint and resume together."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run(workdir, steps, local_devices=2, nproc=2):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [
    subprocess.Popen(
      [sys.executable, WORKER, str(i), str(port), str(workdir), str(steps), str(local_devices), str(nproc)],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(nproc)
  ]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  return results


# Opt-in (make test-multihost): one run of the default suite on a heavily loaded machine saw the two
# processes stall in their first run until the timeout; not reproduced, so it does not gate CI.
@pytest.mark.multihost
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
  assert full[0]["test_mse"] == pytest.approx(single["test_mse"], rel=1e-6)
  assert sorted(os.listdir(tmp_path / "full" / "checkpoints")) == ["3", "6"]
