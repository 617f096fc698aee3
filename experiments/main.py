r"""Trains and evaluates one experiment; rerunning the same command resumes from the latest checkpoint.

    python -m experiments.main --config experiments/configs/conv_ae_fashion_mnist.py --workdir runs/conv_ae \
        [--config.total_steps=2000 --config.optimizer.learning_rate=3e-4 ...]

On several hosts, run the same command on each with --distributed (TPU pods and SLURM are detected; else
add --coordinator_address=HOST:PORT --num_processes=N --process_id=I); batch_size stays global.

Writes WORKDIR/checkpoints (Orbax), WORKDIR/metrics.jsonl, WORKDIR/tensorboard, WORKDIR/reconstructions.png
(plus samples.png from the prior for VAEs and latents.png, a scatter of the codes coloured by label) and
WORKDIR/results.json (final test metrics, the mean-image baseline and, for VAEs with
config.likelihood_eval.num_samples > 0, the importance-sampled test NLL in nats and bits/dim). With
config.anomaly.enabled (time series with labelled anomalies) it also writes WORKDIR/anomalies.png and adds
the test split's anomaly precision, recall, F-beta and ROC-AUC to results.json (ae_jax/anomaly.py).
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
flags.DEFINE_bool(
  "distributed", False, "Multi-host: call jax.distributed.initialize() (auto-detected on TPU pods and SLURM)."
)
flags.DEFINE_string("coordinator_address", None, "With --distributed off a cluster: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "With --distributed off a cluster: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed off a cluster: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(
      f"unexpected arguments {argv[1:]}; options are --config, --config.KEY=VALUE, --workdir"
    )
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every save at INFO
  import jax

  if FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  from ae_jax import anomaly, evaluate, likelihood, models, train
  from ae_jax.errors import AEJaxError

  config, workdir = FLAGS.config, os.path.abspath(FLAGS.workdir)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, processes: {jax.process_count()}")
  try:
    if config.anomaly.enabled:
      anomaly.check_config(config)  # fail before training, not after
    summary = train.train_and_evaluate(config, workdir)
  except AEJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if summary["preempted"] or jax.process_index() != 0:
    return
  dataset = summary["dataset"]
  info = dataset.info
  source = dataset.splits.get("test", dataset.splits.get("validation", dataset.splits["train"]))
  model, state, results = summary["model"], summary["state"], {"step": summary["step"], **summary["metrics"]}
  images = []
  if info.to_image is not None:  # datasets that cannot be drawn (time series) have no to_image
    path = os.path.join(workdir, "reconstructions.png")
    images.append(
      evaluate.save_reconstruction_grid(path, model, state, source, info, config.visualize.num_images)
    )
  abilities = models.abilities(model)
  if "generative" in abilities:
    images.append(evaluate.save_prior_samples(os.path.join(workdir, "samples.png"), model, state, info))
  if config.visualize.num_latents and info.class_names is not None:
    path = os.path.join(workdir, "latents.png")
    images.append(
      evaluate.save_latent_scatter(path, model, state, source, info, config.visualize.num_latents)
    )
  lik = config.likelihood_eval
  if lik.num_samples and "likelihood" in abilities:
    print(f"estimating log p(x) with {lik.num_samples} importance samples per test example ...")
    estimate = likelihood.evaluate_likelihood(
      model,
      state,
      source,
      info,
      num_samples=lik.num_samples,
      chunk_size=lik.chunk_size,
      batch_size=lik.batch_size,
      max_examples=lik.max_examples,
    )
    results.update({f"test/is_{k}": v for k, v in estimate.items()})
    print(
      f"test NLL {estimate['nll']:.3f} +- {estimate['nll_stderr']:.3f} nats ({estimate['bits_per_dim']:.4f} "
      f"bits/dim), negative ELBO {estimate['neg_elbo']:.3f} nats, {int(estimate['num_examples'])} examples"
    )
  if config.anomaly.enabled:  # time series with labelled anomalies: threshold on validation, report on test
    report = anomaly.detect(model, state, config, dataset, workdir)
    results.update(report.metrics)
    images.append(report.plot)
    print(report.summary)
  if "test/mse" in results:
    results["test/mse_of_mean_image"] = evaluate.mean_image_mse(dataset.splits["train"], source, info)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(f"step {summary['step']}: {evaluate.summary_line(summary['metrics'])}")
  if "test/mse_of_mean_image" in results:
    print(f"baseline (predict the training mean image): test/mse {results['test/mse_of_mean_image']:.5g}")
  print(
    f"checkpoints: {workdir}/checkpoints\n"
    f"metrics:     {workdir}/metrics.jsonl (TensorBoard: {workdir}/tensorboard)"
  )
  print(f"images:      {', '.join(images)}")


USAGE = "python -m experiments.main --config FILE.py[:ARG] [--config.KEY=VALUE ...] --workdir DIR"

if __name__ == "__main__":
  from ae_jax.config import parse_flags_or_exit

  app.run(main, flags_parser=lambda argv: parse_flags_or_exit(argv, FLAGS, USAGE))
