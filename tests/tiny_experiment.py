r"""A small experiment for tests that run the command line in subprocesses (synthetic 8x8 images, MLP).

    python -m experiments.main --config tests/tiny_experiment.py:steps=300,ckpt=50 --workdir DIR

The argument sets `steps`, `ckpt` (checkpoint interval), `eval` (evaluation interval), `hidden` (widths
joined with "x"), `test` (test images) and `folder` (a folder of images to read instead of synthetic
ones, resized to 8x8 grayscale); all optional.
"""

from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.runner.config import default_config


def get_config(arg: str = ""):
  options = dict(kv.split("=") for kv in arg.split(",") if kv)
  config = default_config()
  hidden = tuple(int(h) for h in options.get("hidden", "32x16").split("x"))
  config.model = model_config("mlp_ae", hidden=hidden, code_dim=4)
  test = int(options.get("test", 40))
  config.data = data_config("synthetic", shape=(8, 8, 1), num_train=96, num_test=test)
  if "folder" in options:
    config.data = data_config("image_folder", path=options["folder"], image_size=8, channels=1)
  config.batch_size = 16
  config.eval_batch_size = 8
  config.total_steps = int(options.get("steps", 300))
  config.log_every = 10
  config.evals.test.every = int(options.get("eval", 0))
  del config.evals["reconstructions"]
  config.checkpoint_every = int(options.get("ckpt", 50))
  config.optimizer.learning_rate = 3e-3
  return config
