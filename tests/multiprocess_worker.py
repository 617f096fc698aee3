"""One process of a multi-process training run on loopback (run by tests/test_multiprocess.py).

argv: process_id port workdir total_steps devices_per_process num_processes [checkpoint_every]. Prints one
JSON line: the process, the step it stopped at, whether it was preempted, its test MSE and parameters.
"""

import json
import os
import sys

pid, port, workdir, steps, local_devices, nproc, *rest = sys.argv[1:]
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={local_devices}")

import jax  # noqa: E402
import numpy as np  # noqa: E402

if int(nproc) > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=int(nproc), process_id=int(pid))

from ae_jax import loop  # noqa: E402
from ae_jax.config import default_config  # noqa: E402
from ae_jax.data import data_config  # noqa: E402

c = default_config()
c.model = {"name": "mlp_ae", "hidden": (16,), "code_dim": 4}
c.data = data_config("synthetic", shape=(8, 8, 1), num_train=64, num_test=24)
c.batch_size, c.eval_batch_size, c.total_steps = 16, 8, int(steps)
c.log_every, c.async_checkpoints = 2, False
c.evals.test.every = 0
del c.evals["reconstructions"]
c.checkpoint_every = int(rest[0]) if rest else 3
summary = loop.train_and_evaluate(c, workdir)
params = jax.device_get(summary["state"].params)
print(
  json.dumps(
    {
      "process": jax.process_index(),
      "step": summary["step"],
      "preempted": summary["preempted"],
      "test_mse": summary["metrics"].get("test/mse"),
      "params": [np.asarray(p).ravel().tolist() for p in jax.tree.leaves(params)],
    }
  )
)
sys.stdout.flush()
