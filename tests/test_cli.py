"""experiments.main's command line: bad input fails before any training with one line naming the fix."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import process_env

pytestmark = pytest.mark.slow  # starts processes: in make test, not in make test-fast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/configs/conv_ae_fashion_mnist.py"


def _main(*args, workdir):
  return subprocess.run(
    [sys.executable, "-m", "experiments.main", *args, f"--workdir={workdir}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


@pytest.mark.parametrize(
  "args, expected",
  [
    (
      (f"--config={CONFIG}", "--config.batchsize=3"),
      "unknown config key 'batchsize'; did you mean 'batch_size'?",
    ),
    ((f"--config={CONFIG}", "--config.model.code_dims=3"), "did you mean 'code_dim'?"),
    (
      ("--config=experiments/configs/vqvae_cifar10.py", "--config.model.num_codes=8"),
      "is not an option of model 'vqvae' but of its quantizer section (for quantizer",
    ),
    (("--config=experiments/configs/no_such_config.py",), "no_such_config.py"),
    ((f"--config={CONFIG}", "--config.batch_size=not_a_number"), "batch_size"),
    (
      ("--config=experiments/configs/vqvae_cifar10.py:quantizer=vqq",),
      "error: vqvae_cifar10.py:quantizer=vqq: choose one of ['vq', 'fsq', 'rvq', 'lfq', 'gumbel']",
    ),
  ],
)
def test_bad_command_line_is_one_error_line(tmp_path, args, expected):
  out = _main(*args, workdir=tmp_path)
  lines = [line for line in out.stderr.splitlines() if not line.startswith(("I1", "W1"))]
  assert out.returncode != 0
  assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.stderr
  assert "Traceback" not in out.stderr
  assert not os.listdir(tmp_path)  # nothing was written


def test_model_options_not_in_the_file_can_still_be_overridden():
  """Configs list every option of their model (models.model_config), so any can be set from the CLI."""
  from experiments.configs import conv_ae_fashion_mnist

  config = conv_ae_fashion_mnist.get_config()
  assert {"act", "output_act", "channels", "dense", "code_dim"} <= set(config.model)


def test_a_replaced_key_on_the_command_line_names_its_replacement(tmp_path):
  out = _main(f"--config={CONFIG}", "--config.eval_every=5", workdir=tmp_path)
  assert out.returncode != 0 and "Traceback" not in out.stderr
  assert "config.eval_every was replaced by the `every` of an evaluator" in out.stderr, out.stderr


def test_evaluate_without_a_checkpoint_is_one_error_line(tmp_path):
  out = subprocess.run(
    [sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 1 and out.stderr.strip().splitlines() == [
    f"error: {tmp_path} has no checkpoint (no {tmp_path}/checkpoints); train that run first or fix the path"
  ]


def test_the_console_shows_what_matters_and_the_log_keeps_the_rest(tmp_path):
  """A run that prepares a dataset prints one line about it (not tfds' banners and progress bars) and no
  absl INFO lines, also from its data worker processes; WORKDIR/log.txt keeps everything."""
  from PIL import Image

  for split in ("train", "test"):
    (tmp_path / "pics" / split).mkdir(parents=True)
    for i in range(8):
      Image.fromarray(np.full((12, 12), 10 * i, np.uint8)).save(tmp_path / "pics" / split / f"{i}.png")
  env = process_env(2, TFDS_DATA_DIR=str(tmp_path / "tfds"))
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      f"--config=tests/tiny_experiment.py:steps=20,ckpt=0,folder={tmp_path / 'pics'}",
      "--config.data.on_device=false",  # the host pipeline, its batches made by worker processes
      "--config.data.num_workers=2",
      f"--workdir={tmp_path / 'run'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=env,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  console = out.stdout + out.stderr
  for noise in ("Downloading and preparing", "Shuffling", "Generating", "I1", "W1", "libtpu"):
    assert noise not in console, (noise, console[-3000:])
  assert "preparing image_folder from" in console and "step 20:" in out.stdout
  assert "2 worker processes assemble the batches" in console
  log = (tmp_path / "run" / "log.txt").read_text()
  assert "Downloading and preparing" in log and "INFO" in log


def _parse(*args):
  """experiments.main's parse of `--config=CONFIG ARGS --workdir=...`, in this process: the config."""
  from absl import flags

  from experiments import main

  argv = ["main", f"--config={CONFIG}", *args, "--workdir=/nonexistent/run"]
  flag_values = flags.FlagValues()
  main.define_flags(flag_values, sys_argv=argv)
  main.parse_command_line(argv, flag_values)
  return flag_values.config


def test_flags_add_loss_terms_warm_ups_and_evaluators():
  from ae_jax import evaluators
  from ae_jax.training import train

  config = _parse(
    "--config.loss.l1=0.1",
    "--config.loss_schedules.l1=100",
    "--config.evals.quality=image_quality",
    "--config.evals.val={'type': 'losses', 'split': 'test', 'every': 7}",
  )
  assert config.loss.to_dict() == {"mse": 1.0, "l1": 0.1}
  assert set(train.loss_weights(config)) == {"mse", "l1"}  # the objective's terms
  assert config.loss_schedules.to_dict() == {"l1": 100}
  assert config.evals.quality.to_dict() == evaluators.section("image_quality").to_dict()
  assert config.evals.val.to_dict() == evaluators.section("losses", split="test", every=7).to_dict()
  with pytest.raises(AttributeError):  # locked again once checked
    config.new_key = 1


@pytest.mark.parametrize(
  "args, expected",
  [
    (("--config.loss.l11=0.1",), "error: unknown config.loss term 'l11'; did you mean 'l1'?"),
    (("--config.loss.l1=abc",), "error: config.loss.l1 is the term's weight, a number; got 'abc'"),
    (
      ("--config.evals.quality=image_qualty",),
      "error: unknown config.evals.quality.type 'image_qualty'; did you mean 'image_quality'?",
    ),
    (
      ("--config.evals.val={'type': 'losses', 'splt': 'test'}",),
      "error: config.evals.val.splt is not an option of type 'losses'; did you mean 'split'?",
    ),
    (("--config.batchsize=3",), "error: unknown config key 'batchsize'; did you mean 'batch_size'?"),
    (
      ("--config.optimizer.learning_rat=3",),
      "error: unknown config key 'optimizer.learning_rat'; did you mean 'optimizer.learning_rate'?",
    ),
    (("--config.model.code_dims=3",), "error: config.model.code_dims is not an option of model 'conv_ae'"),
    (("--config.evals.val.split=test",), "error: --config.evals.val.split: there is no config.evals.val"),
  ],
)
def test_a_misspelled_added_key_is_one_error_line_before_any_compute(capsys, args, expected):
  with pytest.raises(SystemExit) as e:
    _parse(*args)
  message = str(e.value.code) if e.value.code != 1 else capsys.readouterr().err.strip()
  assert message.startswith(expected) and "\n" not in message, message
