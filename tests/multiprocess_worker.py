"""One process of a multi-process training run on loopback (run by tests/test_multiprocess.py).

argv: process_id port workdir total_steps devices_per_process num_processes [checkpoint_every [stage_one]].
Trains a tiny mlp_ae on synthetic images, or with `stage_one` (a VQ-VAE run's workdir) a tiny AR prior
over its codes (cached under WORKDIR.codes) and then draws 8 samples from it. Prints one JSON line: the
process, the step it stopped at, whether it was preempted, its test loss, parameters (and their names)
and samples.
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

from ae_jax.data import data_config  # noqa: E402
from ae_jax.generation import stage_one  # noqa: E402
from ae_jax.runner import loop  # noqa: E402
from ae_jax.runner.config import default_config  # noqa: E402

checkpoint_every = int(rest[0]) if rest else 3
prior_of = rest[1] if len(rest) > 1 else ""
if prior_of:
  from experiments.configs import prior_ar

  c = prior_ar.get_config(prior_of)
  c.data.cache_dir = workdir + ".codes"
  c.model.update(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32, dropout=0.0)
  c.optimizer.warmup_steps = 2
  c.eval_batch_size = 8
  loss = "test/code_nll"
else:
  c = default_config()
  c.model = {"name": "mlp_ae", "hidden": (16,), "code_dim": 4}
  c.data = data_config("synthetic", shape=(8, 8, 1), num_train=64, num_test=24)
  c.eval_batch_size = 8
  del c.evals["reconstructions"]
  loss = "test/mse"
c.batch_size, c.total_steps = 16, int(steps)
c.log_every, c.async_checkpoints = 2, False
c.evals.test.every = 0
c.checkpoint_every = checkpoint_every
summary = loop.train_and_evaluate(c, workdir)
params = jax.tree_util.tree_leaves_with_path(jax.device_get(summary["state"].params))
samples = []
if prior_of:
  from ae_jax.generation import generate

  samples = generate.sample_tokens(stage_one.load_run(workdir), 8, seed=3, per_device=2).tolist()
print(
  json.dumps(
    {
      "process": jax.process_index(),
      "step": summary["step"],
      "preempted": summary["preempted"],
      "test_loss": summary["metrics"].get(loss),
      "params": [np.asarray(p).ravel().tolist() for _, p in params],
      "param_names": [jax.tree_util.keystr(path) for path, _ in params],
      "samples": samples,
    }
  )
)
sys.stdout.flush()
