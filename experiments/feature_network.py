r"""Trains (once) and caches the feature network of an image dataset, and prints its test accuracy.

    python -m experiments.feature_network --config experiments/configs/feature_network.py:fashion_mnist \
        [--cache_dir DIR] [--config.steps=3000 ...]

The network is cached as CACHE/<dataset>-<fingerprint>.msgpack, CACHE being --cache_dir or the user cache
($XDG_CACHE_HOME/ae_jax/feature_networks, else ~/.cache/ae_jax/feature_networks)
with a .json of its test accuracy and settings; a rerun reads it instead of training.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "experiments/configs/feature_network.py:DATASET", lock_config=True
)
flags.DEFINE_string(
  "cache_dir",
  None,
  "Folder of cached feature networks (default: $XDG_CACHE_HOME/ae_jax/feature_networks, else "
  "~/.cache/ae_jax/feature_networks).",
)
flags.mark_flags_as_required(["config"])
USAGE = "python -m experiments.feature_network --config experiments/configs/feature_network.py:DATASET"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(
      f"unexpected arguments {argv[1:]}; options are --config, --config.KEY=VALUE, --cache_dir"
    )
  from ae_jax.core import cli

  cli.run_or_exit(lambda: _run(FLAGS.config, FLAGS.cache_dir))


def _run(config, cache_dir: str | None) -> None:
  from ae_jax.core import console
  from ae_jax.metrics import feature_network

  console.setup()
  net = feature_network.load_or_train(config.data, cache_dir, feature_network.Settings.from_config(config))
  path = feature_network.cache_paths(config.data, net.settings, cache_dir)[0]
  print(net.describe())
  if net.train_seconds is not None:
    print(f"trained in {net.train_seconds:.0f} s")
  print(f"cached:  {path}" if path.exists() else "not cached (see the warning above)")


if __name__ == "__main__":
  from ae_jax.runner.command_line import parse_flags_or_exit

  app.run(main, flags_parser=lambda argv: parse_flags_or_exit(argv, FLAGS, USAGE))
