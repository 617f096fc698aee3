r"""Trains and evaluates one experiment; rerunning the same command resumes from the latest checkpoint.

    python -m experiments.main --config experiments/configs/conv_ae_fashion_mnist.py --workdir runs/conv_ae \
        [--config.total_steps=2000 --config.optimizer.learning_rate=3e-4 ...]

Writes WORKDIR/checkpoints (Orbax), WORKDIR/metrics.jsonl, WORKDIR/tensorboard, WORKDIR/reconstructions.png
and WORKDIR/results.json (final test metrics and the mean-image baseline).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (a .py with get_config()).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images; reruns resume from it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(
      f"unexpected arguments {argv[1:]}; options are --config, --config.KEY=VALUE, --workdir"
    )
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO
  import jax

  from ae_jax import evaluate, train

  config, workdir = FLAGS.config, os.path.abspath(FLAGS.workdir)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, processes: {jax.process_count()}")
  try:
    summary = train.train_and_evaluate(config, workdir)
  except (ValueError, FileNotFoundError, train.NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if summary["preempted"] or jax.process_index() != 0:
    return
  source, info = summary["test_source"], summary["info"]
  image = evaluate.save_reconstruction_grid(
    os.path.join(workdir, "reconstructions.png"),
    summary["model"],
    summary["state"],
    source,
    info,
    config.visualize.num_images,
  )
  results = {"step": summary["step"], **summary["metrics"]}
  if "test/mse" in results:
    results["test/mse_of_mean_image"] = evaluate.mean_image_mse(summary["train_source"], source, info)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(f"step {summary['step']}: {evaluate.summary_line(summary['metrics'])}")
  if "test/mse_of_mean_image" in results:
    print(f"baseline (predict the training mean image): test/mse {results['test/mse_of_mean_image']:.5g}")
  print(
    f"checkpoints: {workdir}/checkpoints\n"
    f"metrics:     {workdir}/metrics.jsonl (TensorBoard: {workdir}/tensorboard)"
  )
  print(f"images:      {image}")


if __name__ == "__main__":
  app.run(main)
