"""A training run for fault-injection tests (run by tests/test_fault_processes.py in a subprocess).

argv: workdir config_arg [slow_eval_marker [seconds]]. With a marker path, the first evaluation creates
that file and then takes 3 s (or `seconds`), so the test can send SIGTERM while an evaluation runs. Prints
one JSON line {"step", "preempted"} and exits 0 after a preemption, as the command line does.
"""

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from tiny_experiment import get_config  # noqa: E402

from ae_jax.runner import loop  # noqa: E402

workdir, arg, *marker = sys.argv[1:]
pause = float(marker[1]) if len(marker) > 1 else 3.0
if marker:
  from ae_jax.evaluators import batches

  split_sums, calls = batches.split_sums, []

  def slow_split_sums(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      pathlib.Path(marker[0]).touch()
      time.sleep(pause)
    return split_sums(*args, **kwargs)

  batches.split_sums = slow_split_sums
summary = loop.train_and_evaluate(get_config(arg), workdir)
print(json.dumps({"step": summary["step"], "preempted": summary["preempted"]}))
