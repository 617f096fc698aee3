r"""Runs evaluators on a run's checkpoint without training; writes WORKDIR/eval_<step>.json, and the
evaluators' files as WORKDIR/eval_<step>_<name>.png (the run's own results.json and pictures stay).

    python -m experiments.evaluate --workdir runs/vqvae_cifar10                     # latest checkpoint
    python -m experiments.evaluate --workdir runs/ad_power --best                   # the keep_best state
    python -m experiments.evaluate --workdir runs/conv_ae --step 2000 --only test
    python -m experiments.evaluate --workdir runs/vqvae_cifar10 --add quality:image_quality \
        --config.evals.quality.split=test --config.evals.test.max_examples=1000
    python -m experiments.evaluate --workdir runs/vqvae_cifar10 --add rfid:rfid --only rfid \
        --inception_weights ~/pt_inception-2015-12-05-6726825d.pth

The config is the one the run saved with its checkpoint; `--config.KEY=VALUE` overrides any of it (an
evaluator's options included), `--add NAME:TYPE` (or `--config.evals.NAME=TYPE`, see
`ae_jax.runner.config.complete_config`) adds an evaluator section with its defaults first, and `--only
NAME,NAME`
runs just those. `--inception_weights PATH` gives pytorch-fid's Inception weights file (or its folder) to
every `fid`, `rfid` and `inception_score` section (their `weights` option; without it they look in
$AE_JAX_INCEPTION and the caches, `ae_jax.metrics.inception_weights`); a path that is not the file, or the
flag without such a section, stops with one `error:` line. A workdir without a checkpoint stops with one
`error:` line too.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

# Its own flag set, so this command and the others can be imported into one process (tests).
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "The run's directory (its checkpoints/ and best/).", flag_values=FLAGS)
flags.DEFINE_integer("step", None, "Evaluate this checkpoint step (default: the latest).", flag_values=FLAGS)
flags.DEFINE_bool("best", False, "Evaluate the state kept by config.keep_best.", flag_values=FLAGS)
flags.DEFINE_list("only", [], "Run only these evaluators (names in config.evals).", flag_values=FLAGS)
flags.DEFINE_multi_string(
  "add", [], "NAME:TYPE[:SPLIT]: add an evaluator section with its defaults.", flag_values=FLAGS
)
flags.DEFINE_string(
  "inception_weights",
  None,
  "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or its folder), for the fid, rfid and "
  "inception_score sections.",
  flag_values=FLAGS,
)
flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize().", flag_values=FLAGS)
USAGE = (
  "python -m experiments.evaluate --workdir DIR [--step N | --best] [--only A,B] [--add NAME:TYPE] "
  "[--inception_weights PATH]"
)
INCEPTION_TYPES = ("fid", "rfid", "inception_score")  # the evaluators that read --inception_weights


def saved_config(argv: list[str]):
  """The config saved with the checkpoint the command line asks for (and --add sections added)."""
  from ae_jax import evaluators
  from ae_jax.core.errors import ConfigError, DataError
  from ae_jax.generation import stage_one

  values: dict[str, list[str]] = {}
  args = list(argv[1:])
  while args:
    arg = args.pop(0)
    name, eq, value = arg.lstrip("-").partition("=")
    if name in ("best", "nobest") and not eq:
      values["best"] = ["false" if name == "nobest" else "true"]
    elif name in ("workdir", "step", "best", "add", "inception_weights"):
      values.setdefault(name, []).append(value if eq else (args.pop(0) if args else ""))
  if "workdir" not in values:
    raise ConfigError(f"--workdir is required ({USAGE})")
  workdir = os.path.abspath(values["workdir"][-1])
  best = values.get("best", ["false"])[-1].lower() in ("true", "1")
  step = int(values["step"][-1]) if "step" in values else None
  _, config = stage_one.saved_config(workdir, step, best)
  for spec in values.get("add", []):
    name, type_, *split = spec.split(":")
    if not type_:
      raise DataError(f"--add={spec}: use NAME:TYPE[:SPLIT]")
    config.evals[name] = evaluators.section(type_, split=split[0] if split else "test")
  if "inception_weights" in values:
    inception = [name for name, sec in config.evals.items() if sec.get("type") in INCEPTION_TYPES]
    if not inception:
      raise ConfigError(
        f"--inception_weights: the run has no {'/'.join(INCEPTION_TYPES)} evaluator to give it to; add one, "
        "e.g. --add fid:fid or --add rfid:rfid"
      )
    for name in inception:
      config.evals[name].weights = os.path.expanduser(values["inception_weights"][-1])
  return config


def main(argv: list[str]) -> None:
  from ae_jax.core import cli, console
  from ae_jax.core import workdir as workdirs
  from ae_jax.runner import config as configs
  from ae_jax.runner import loop

  def evaluate() -> None:
    configs.complete_config(FLAGS.config)
    console.setup()
    cli.initialize(FLAGS.distributed, None, None, None)
    path = workdirs.prepare(FLAGS.workdir)
    step, result, out = loop.evaluate_checkpoint(
      FLAGS.config, path, step=FLAGS.step, best=FLAGS.best, names=FLAGS.only or None
    )
    cli.report(step, result, path, evaluation=out)

  cli.run_or_exit(evaluate)


if __name__ == "__main__":
  from ae_jax.core import cli
  from ae_jax.runner.command_line import own_flags_parser

  config = cli.run_or_exit(lambda: saved_config(sys.argv))
  config_flags.DEFINE_config_dict(
    "config",
    config,
    "The run's saved config; override with --config.KEY=VALUE.",
    lock_config=False,
    flag_values=FLAGS,
    accept_new_attributes=True,  # evaluators and loss terms added by flags: complete_config checks them
  )
  app.run(main, flags_parser=own_flags_parser(FLAGS, USAGE))
