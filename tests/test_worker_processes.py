"""Worker processes die with the process that reads their batches (`ae_jax.data.worker_processes`): after
kill -9 of the consumer, its workers, the resource tracker and the shared-memory slots are gone."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from ae_jax.data import worker_processes

pytestmark = pytest.mark.slow  # starts processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A consumer of batches from 2 workers (batches large enough for shared-memory slots) that stops reading.
CONSUMER = textwrap.dedent(
  """
  import itertools, time
  import numpy as np
  from ae_jax.data import worker_processes

  def make(step):
    return {"x": np.full((64, 1024), step, np.float32)}

  if __name__ == "__main__":
    for i, batch in enumerate(worker_processes.batches(make, itertools.count(), 2)):
      assert batch["x"][0, 0] == i
      if i == 6:
        print("reading", flush=True)
        time.sleep(300)
  """
)


def _gone(process: psutil.Process) -> bool:
  try:
    return process.status() == psutil.STATUS_ZOMBIE  # exited; reaped by whoever adopted it
  except psutil.NoSuchProcess:
    return True


def test_workers_the_resource_tracker_and_the_slots_die_with_a_killed_consumer(tmp_path):
  script = tmp_path / "consumer.py"
  script.write_text(CONSUMER)
  before = set(os.listdir(worker_processes.SHM))
  env = {**os.environ, "PYTHONPATH": ROOT}
  proc = subprocess.Popen(
    [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
  )
  children: list[psutil.Process] = []
  try:
    assert proc.stdout.readline().strip() == "reading"
    children = psutil.Process(proc.pid).children(recursive=True)
    mine = worker_processes.slot_prefix(proc.pid)
    slots = {n for n in set(os.listdir(worker_processes.SHM)) - before if n.startswith(mine)}
    assert len(children) == 3 and slots  # 2 workers and the resource tracker; the batches' slots
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
      if all(_gone(c) for c in children) and not slots & set(os.listdir(worker_processes.SHM)):
        break
      time.sleep(0.1)
    assert [c.pid for c in children if not _gone(c)] == []
    assert slots & set(os.listdir(worker_processes.SHM)) == set()
  finally:
    for process in [proc, *children]:
      try:
        process.kill()
      except (psutil.NoSuchProcess, ProcessLookupError):
        pass
    proc.wait()
