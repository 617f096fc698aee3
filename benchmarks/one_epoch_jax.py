r"""Test MSE after one epoch (468 steps, Adam 1e-3, batch 128) of the seed autoencoders in ae-jax.

The counterpart of `torch_seed_fashion_mnist.py` (the seed's PyTorch code): same data scaling ([-1, 1]),
loss (per-pixel MSE), optimizer, batch and number of steps; the test MSE is over all 10,000 test images.

    python -m benchmarks.one_epoch_jax --models mlp,conv --seeds 0,1,2 [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

import numpy as np

from ae_jax.runner import loop
from experiments.configs import conv_ae_fashion_mnist, mlp_ae_fashion_mnist

CONFIGS = {"mlp": mlp_ae_fashion_mnist, "conv": conv_ae_fashion_mnist}


def run(model: str, seed: int, steps: int) -> dict:
  config = CONFIGS[model].get_config()
  config.seed, config.total_steps = seed, steps
  config.batch_size, config.optimizer.learning_rate = 128, 1e-3
  config.log_every, config.checkpoint_every = steps, 0
  config.evals = {"test": config.evals.test}  # the test MSE only, after training
  config.evals.test.every = 0
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    summary = loop.train_and_evaluate(config, workdir)
    rows = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  train_rows = [r for r in rows if "examples_per_sec" in r]
  return {
    "model": model,
    "seed": seed,
    "steps": steps,
    "test_mse": summary["metrics"]["test/mse"],
    "examples_per_sec": train_rows[-1]["examples_per_sec"],
    "wall_s": time.perf_counter() - start,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="mlp,conv")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=468)
  parser.add_argument("--json-out")
  args = parser.parse_args()
  logging.getLogger("absl").setLevel(logging.WARNING)
  results = []
  for model in args.models.split(","):
    runs = [run(model, int(s), args.steps) for s in args.seeds.split(",")]
    mse = np.array([r["test_mse"] for r in runs])
    for r in runs:
      print(
        f"{model} seed {r['seed']}: test mse {r['test_mse']:.5f} ({r['examples_per_sec']:.0f} examples/s)"
      )
    print(
      f"{model}: test mse after {args.steps} steps {mse.mean():.5f} +- "
      f"{mse.std(ddof=1) if len(mse) > 1 else 0:.5f}"
    )
    results += runs
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
