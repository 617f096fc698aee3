r"""Trains and evaluates one experiment; rerunning the same command resumes from the latest checkpoint.

    python -m experiments.main --config experiments/configs/conv_ae_fashion_mnist.py --workdir runs/conv_ae \
        [--config.total_steps=2000 --config.optimizer.learning_rate=3e-4 ...]

On several hosts, run the same command on each with --distributed (TPU pods and SLURM are detected; else
add --coordinator_address=HOST:PORT --num_processes=N --process_id=I); batch_size stays global.

Everything is written under WORKDIR: checkpoints/ (Orbax), metrics.jsonl, tensorboard/, log.txt (every log
line), the evaluators' files (config.evals: reconstructions.png, ...) and results.json (their final
metrics). A bad config, data or workdir stops with one `error:` line; anything else is a bug and keeps its
traceback. SIGTERM (preemption) and Ctrl-C (SIGINT) during training save the current step and exit 0 with
one line; rerunning the command resumes from it.

Flags may also add loss terms and evaluators to the config file's (`ae_jax.runner.config.complete_config`):

    --config.loss.l1=0.1 --config.loss_schedules.kl=5000
    --config.evals.psnr=image_quality --config.evals.val="{'type': 'losses', 'split': 'validation'}"

A misspelled key, term or evaluator type is one `error:` line naming the closest valid one, before any
compute.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
USAGE = "python -m experiments.main --config FILE.py[:ARG] [--config.KEY=VALUE ...] --workdir DIR"


def define_flags(flag_values: flags.FlagValues, sys_argv: list[str] | None = None) -> None:
  """Defines this command's flags on `flag_values`; the config flag reads its --config.KEY overrides from
  `sys_argv` (default: sys.argv) and accepts new keys, which `complete_config` checks."""
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file (a .py with get_config()).",
    flag_values=flag_values,
    lock_config=False,
    accept_new_attributes=True,
    sys_argv=sys_argv,
  )
  fv = flag_values
  flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and images; reruns resume from it.", flag_values=fv
  )
  flags.DEFINE_bool(
    "distributed",
    False,
    "Multi-host: call jax.distributed.initialize() (auto-detected on TPU pods and SLURM).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "coordinator_address", None, "With --distributed off a cluster: host:port of process 0.", flag_values=fv
  )
  flags.DEFINE_integer(
    "num_processes", None, "With --distributed off a cluster: the number of processes.", flag_values=fv
  )
  flags.DEFINE_integer(
    "process_id", None, "With --distributed off a cluster: this process's index.", flag_values=fv
  )
  flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


def parse_command_line(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
  """Parses argv into flag_values (`define_flags`) and completes and checks its config
  (`config.complete_config`); a bad command line or config exits with one `error:` line."""
  from ae_jax.core import cli
  from ae_jax.runner import command_line
  from ae_jax.runner import config as configs

  rest = command_line.parse_flags_or_exit(argv, flag_values, USAGE)
  cli.run_or_exit(lambda: configs.complete_config(flag_values.config))
  return rest


define_flags(FLAGS)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(
      f"unexpected arguments {argv[1:]}; options are --config, --config.KEY=VALUE, --workdir"
    )
  from ae_jax.core import cli

  try:
    cli.run_or_exit(lambda: _train(FLAGS.config, FLAGS.workdir))
  except KeyboardInterrupt:  # Ctrl-C outside the training steps (there it saves the step and stops)
    _interrupted(FLAGS.workdir)


def _interrupted(workdir: str) -> None:
  """Exits 130 with one line: the run was interrupted where no step was left unsaved (while starting up or
  closing down), and the newest checkpoint it resumes from."""
  import os
  import sys

  folder = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []
  where = f"the newest checkpoint is step {steps[-1]} in {folder}" if steps else "there is no checkpoint yet"
  print(f"interrupted outside the training steps: {where}; rerun the same command to resume", file=sys.stderr)
  sys.exit(130)


def _train(config, workdir: str) -> None:
  from ae_jax.core import cli, console
  from ae_jax.core import workdir as workdirs
  from ae_jax.runner import loop

  console.setup()
  cli.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  import jax

  path = workdirs.prepare(workdir)
  if jax.process_index() == 0:
    console.add_log_file(path)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}, processes: {jax.process_count()}")
  summary = loop.train_and_evaluate(config, path)
  if summary["preempted"] or jax.process_index() != 0:
    return
  cli.report(summary["step"], summary["results"], path)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_command_line)
