"""Tests for ae_jax.runner.bottleneck: per-call shapes and parameters, compression ratios, the note, and the
CLI."""

import inspect as stdlib_inspect
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

import ae_jax.runner.bottleneck as bottleneck
from ae_jax.models import get_model
from ae_jax.runner.bottleneck import Report, format_report, inspect_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV_CONFIG = "experiments/configs/conv_ae_fashion_mnist.py"
WIDTH = 110  # the longest line the report may print (the project's line length)


@pytest.fixture(scope="module")
def conv_report() -> Report:
  return inspect_model(get_model("conv_ae"), (28, 28, 1))


def test_conv_ae_rows_shapes_and_params(conv_report):
  """Every conv layer with its per-example output shape; the rows' own parameters sum to the seed's 53,969."""
  rows = {r.path: r for r in conv_report.rows}
  expected = {
    "encoder/Conv_0": (14, 14, 8),
    "encoder/Conv_1": (7, 7, 16),
    "encoder/Conv_2": (3, 3, 32),
    "encoder/Conv_3": (1, 1, 64),
    "encoder/Dense_0": (32,),
    "code_layer": (16,),
    "decoder/Dense_0": (32,),
    "decoder/Dense_1": (64,),
    "decoder/ConvTranspose_0": (3, 3, 32),
    "decoder/ConvTranspose_1": (7, 7, 16),
    "decoder/ConvTranspose_2": (14, 14, 8),
    "decoder/ConvTranspose_3": (28, 28, 1),
  }
  for path, shape in expected.items():
    assert rows[path].example_shape == shape, path
    assert rows[path].shape == ("B", *shape)
  assert rows["encoder/Conv_0"].module == "Conv" and rows["decoder/ConvTranspose_3"].module == "ConvTranspose"
  assert rows["encoder/Conv_0"].size == 14 * 14 * 8
  assert rows["encoder/Conv_0"].params == 3 * 3 * 1 * 8 + 8  # own parameters: kernel and bias
  assert rows["encoder"].params == 0  # a parent's count excludes its children's
  assert [r.path for r in conv_report.rows].index("encoder") < [r.path for r in conv_report.rows].index(
    "encoder/Conv_0"
  )  # call order, parents first
  assert sum(r.params for r in conv_report.rows) == conv_report.total_params == 53_969
  assert conv_report.other_variables == {}


def test_conv_ae_input_code_recon_and_ratio(conv_report):
  assert conv_report.input_shape == (28, 28, 1) and conv_report.input_size == 784
  assert conv_report.code_key == "code"
  assert conv_report.code_shape == ("B", 16) and conv_report.code_size == 16
  assert conv_report.recon_shape == ("B", 28, 28, 1) and conv_report.recon_size == 784
  assert conv_report.ratio == 49.0
  assert conv_report.step_ratio is None  # an image model: no shared time axis
  text = format_report(conv_report)
  assert "784 / 16 = 49.0" in text and "53,969" in text
  assert "encoder/Conv_2" in text and "[B, 3, 3, 32]" in text
  assert "note:" not in text


def test_mlp_ae_ratio_and_params():
  report = inspect_model(get_model("mlp_ae", input_shape=(28, 28, 1)), (28, 28, 1))
  assert report.ratio == 49.0
  assert report.total_params == 223_456 == sum(r.params for r in report.rows)
  assert {r.path: r.example_shape for r in report.rows}["decoder/output"] == (784,)


class _FrameCodec(nn.Module):
  """A per-frame (kernel-1) Conv1d 201 -> 256 and back: the question's 'latent larger than the input'."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    code = nn.Conv(256, (1,), name="to_latent")(x)  # [B, T, 256]
    return {"code": code, "recon": nn.Conv(201, (1,), name="to_frames")(code)}


def test_sequence_model_per_step_ratio_and_note():
  """Input [B, T, 201], code [B, T, 256]: ratio 201/256 < 1 per step, and the report says why that matters."""
  report = inspect_model(_FrameCodec(), (50, 201))
  assert report.code_shape == ("B", 50, 256)
  assert report.ratio == pytest.approx(201 / 256)
  assert report.step_ratio == pytest.approx(201 / 256) and report.step_ratio < 1
  assert report.total_params == (201 * 256 + 256) + (256 * 201 + 201)
  text = format_report(report)
  assert "201 / 256 = 0.785" in text
  assert "larger than its input" in text and "identity" in text and "KL term" in text


class _VAELike(nn.Module):
  """No "code" (so the mean is the code); samples, keeps BatchNorm statistics, folds time into the batch."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    h = nn.BatchNorm(use_running_average=not train)(x)
    mean, logvar = nn.Dense(4, name="mean")(h), nn.Dense(4, name="logvar")(h)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("sample"), mean.shape)
    recon = nn.Dense(6, name="out")(z.reshape(-1, 4)).reshape(x.shape)  # [B*T, 6] inside
    return {"mean": mean, "logvar": logvar, "z": z, "recon": recon}


def test_vae_like_model_uses_mean_and_labels_folded_batch():
  report = inspect_model(_VAELike(), (10, 6))
  assert report.code_key == "mean" and report.code_shape == ("B", 10, 4)
  assert report.ratio == 1.5 and report.step_ratio == 1.5
  rows = {r.path: r for r in report.rows}
  assert rows["out"].shape == ("B*10", 6) and rows["out"].size == 60
  assert report.other_variables == {"batch_stats": 12}
  assert "batch_stats" in format_report(report)


class _ManyOutputs(nn.Module):
  """A submodule whose output is a long dict of arrays with a nested dict of scalars (like a quantizer's)."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(8, name="inner")(x)
    metrics = {f"perplexity_stage{i}": h.mean() for i in range(6)}
    return {f"output_number_{i}": h[..., : i + 1] for i in range(8)} | {"metrics": metrics}


class _WithManyOutputs(nn.Module):
  @nn.compact
  def __call__(self, x, *, train: bool = False):
    out = _ManyOutputs(name="quantizer_with_a_long_name")(x)
    return {"code": out["output_number_3"], "recon": nn.Dense(x.shape[-1])(out["output_number_7"])}


def test_long_outputs_wrap_within_the_width_between_entries():
  """A 300-character dict of output shapes is wrapped between its entries (never inside a shape), every
  line within WIDTH, and the wrapped lines put back together give the unwrapped shape."""
  report = inspect_model(_WithManyOutputs(), (5,))
  lines = format_report(report).splitlines()
  assert max(map(len, lines)) <= WIDTH
  first = next(i for i, line in enumerate(lines) if line.startswith("quantizer_with_a_long_name "))
  column = lines[first].index("{output_number_0")
  # the other columns stay on the first line: 1 + ... + 8 numbers per example and 6 scalars; no own params
  assert lines[first].split()[-2:] == [str(sum(range(1, 9)) + 6), "0"]
  wrapped = [lines[first][column:].split("  ")[0]]
  for line in lines[first + 1 :]:
    if line[:column].strip():
      break
    wrapped.append(line[column:].strip())
  assert len(wrapped) > 2
  row = next(r for r in report.rows if r.path == "quantizer_with_a_long_name")
  assert " ".join(wrapped) == bottleneck._fmt_shape(row.shape)
  assert all(w.endswith(",") or w.endswith("}") for w in wrapped)  # cut after an entry, not inside one


def test_module_name_does_not_shadow_stdlib_inspect():
  assert stdlib_inspect is not bottleneck and hasattr(stdlib_inspect, "signature")


# ----------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  return subprocess.run(
    [sys.executable, "-m", "ae_jax.runner.bottleneck", "--config", CONV_CONFIG, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_cli_conv_ae():
  out = _cli()
  assert out.returncode == 0, out.stderr
  assert "784 / 16 = 49.0" in out.stdout
  assert "total parameters:  53,969" in out.stdout
  assert "encoder/Conv_0" in out.stdout


@pytest.mark.slow
def test_cli_override_changes_ratio():
  out = _cli("--config.model.code_dim=32")
  assert out.returncode == 0, out.stderr
  assert "784 / 32 = 24.5" in out.stdout


@pytest.mark.slow
def test_cli_bad_override_is_one_line_naming_the_key():
  out = _cli("--config.model.code_dims=3")
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr
  assert "code_dims" in lines[0] and "did you mean 'code_dim'" in lines[0]
  assert "Traceback" not in out.stderr and out.stdout == ""
