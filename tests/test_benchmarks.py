"""The benchmark suite (`python -m benchmarks.run`): its smoke mode end to end, and that what it times is
the trainer's own step and loop."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from ae_jax import data
from ae_jax.core import parallel
from ae_jax.runner import experiment, loop
from ae_jax.training import train
from benchmarks import measure, run
from benchmarks import report as reports

ROOT = Path(__file__).resolve().parents[1]
HAVE_TORCH = importlib.util.find_spec("torch") is not None
SMOKE_ARGS = ["--smoke", "--models", "mlp_ae,tied_ae", "--steps-per-dispatch", "1,2", "--device-count", "2"]


def _suite(args: list[str], out: Path) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "benchmarks.run", *args, "--out", str(out)]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_smoke_run_reports_every_column_and_model(tmp_path):
  done = _suite(SMOKE_ARGS, tmp_path)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = json.loads((tmp_path / "benchmark.json").read_text())
  text = (tmp_path / "benchmark.md").read_text()
  assert text in done.stdout and "No timing claims" in text
  assert report["smoke"] and not report["timing_claims"] and not report["errors"]
  assert report["date"] and "--smoke" in report["command"]
  assert {"cpu_count", "platform", "jax", "torch", "python"} <= set(report["machine"])
  assert report["matmul_peak"]["flops_per_s"] > 0

  s = run.settings(run.parse_args(SMOKE_ARGS), list(measure.MODELS))
  header = "| " + " | ".join(reports.model_columns(s)) + " |"
  assert header in text and "step ms (K=2)" in header and "pmap overhead" in header
  assert sorted(report["models"]) == ["mlp_ae", "tied_ae"]
  for name, m in report["models"].items():
    assert text.count(f"| {name} |") == 1
    assert set(m["step"]) == set(m["loop"]) == {"1", "2"}
    assert m["step"]["1"]["flops"] > 0 and m["step"]["1"]["compile_s"] > 0
    assert m["loop"]["1"]["runs"][0]["checkpoints_timed"] == 1  # the smoke run saves at step 4 of 6
    assert m["pipeline"]["batches_per_s"] > 0 and m["peak_rss_mb"] > 0
    assert m["pmap"]["devices"] == 2 and m["data"].startswith("stand-in")
    assert m["params"] == report["models"][name]["params"] > 0
  if HAVE_TORCH:
    assert sorted(report["comparisons"]) == ["mlp_ae@128", "mlp_ae@256"]
    assert "| " + " | ".join(reports.COMPARE_COLUMNS) + " |" in text
    for label, c in report["comparisons"].items():
      assert text.count(f"| {label} |") == 1
      assert c["ratio_step"]["counterpart"] > 0 and c["ratio_loop"] > 0
      assert c["params"]["jax"] == c["params"]["torch"]
  else:
    assert not report["comparisons"] and "PyTorch is not installed" in text


@pytest.mark.training
def test_the_timed_step_is_the_trainers(tiny_config, monkeypatch):
  """The trainer's pmapped function (captured from a run of the suite's timed loop) lowers to the same
  program, with the same FLOPs, as the step the suite times."""
  tiny_config.data.on_device = "false"  # the host-input trainer: its step is the timed one
  captured, pmap = [], jax.pmap
  monkeypatch.setattr(jax, "pmap", lambda fn, **kw: captured.append((fn, kw)) or pmap(fn, **kw))
  timed = measure.time_loop(measure.loop_config(tiny_config, 6, 1))
  monkeypatch.undo()
  assert timed["timed_steps"] == 3 and timed["ms"] > 0  # log steps 3 and 6: the second interval
  (trainer_fn, trainer_kw), *_ = [
    (f, kw) for f, kw in captured if getattr(f, "func", None) is train.train_steps
  ]
  assert trainer_kw == experiment.PMAP_OPTIONS

  bench = measure.build(tiny_config)
  assert set(bench.experiment.step_options) == set(trainer_fn.keywords)
  rstate = parallel.replicate(bench.state)
  batch = measure.dispatch(measure.host_batches(bench), 1)
  ours = bench.p_train.lower(rstate, batch)
  theirs = jax.pmap(trainer_fn, **trainer_kw).lower(rstate, batch)
  assert ours.as_text() == theirs.as_text()
  timer = measure.StepTimer(bench, 1)
  assert timer.flops() == theirs.compile().cost_analysis()["flops"] > 0


def test_ae_jax_and_the_suite_need_no_tensorflow_datasets():
  """A GPU machine may lack tensorflow_datasets: ae_jax, the configs and the suite's measurements import
  and build a model without it (nothing stubs it), the data falling back to the stand-in."""
  code = textwrap.dedent(
    """
    import sys
    sys.modules["tensorflow_datasets"] = None  # any import of it raises ImportError
    from benchmarks import measure, run
    config = measure.shipped_config("mlp_ae")
    used = measure.resolve_data(config, "auto", 64)
    assert used.startswith("stand-in") and "tensorflow_datasets" in used, used
    assert measure.build(config).num_params > 0
    print("ok")
    """
  )
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_loop_time_is_read_from_the_logged_examples_per_sec(tiny_config, monkeypatch):
  """The summed time of the log intervals over their steps, the first interval (which compiles the
  dispatch that ends at a log step) left out when there are others; a single one is kept, less its first
  dispatch."""
  logged = [{"step": 3, "examples_per_sec": 160.0}, {"step": 6, "loss": 1.0, "examples_per_sec": 480.0}]

  def fake_run(config, workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
    return {"compile_seconds": 1.0, "input": "input: host pipeline (a test)", "input_bytes_placed": 900}

  monkeypatch.setattr(loop, "train_and_evaluate", fake_run)
  rows = [*logged, {"step": 9, "examples_per_sec": 240.0}]
  config = measure.loop_config(tiny_config, 9, 1, {"log_every": 3, "checkpoint_every": 0})
  timed = measure.time_loop(config)  # batch 16: steps 4-6 in 0.1 s, steps 7-9 in 0.2 s
  assert timed["timed_steps"] == 6 and timed["ms"] == pytest.approx(1e3 * 0.3 / 6)
  assert timed["input"] == "host" and timed["input_bytes_per_step"] == 100
  rows = logged[1:]
  timed = measure.time_loop(measure.loop_config(tiny_config, 6, 1, {"log_every": 6, "checkpoint_every": 0}))
  assert timed["timed_steps"] == 5 and timed["ms"] == pytest.approx(1e3 * 16 / 480)  # steps 2-6


def test_plans_fit_the_budget():
  assert measure.plan(0.5, 10.0, 5, 20) == (5, 4)
  assert measure.plan(10.0, 10.0, 5, 20) == (3, 1)  # at least 3 samples
  assert measure.plan(1e-4, 10.0, 5, 20) == (5, 20)
  assert measure.loop_steps(0.001, 15.0, 300, 100, 1) == 300
  assert measure.loop_steps(0.07, 15.0, 300, 100, 1) == 200  # whole log intervals
  assert measure.loop_steps(3.5, 15.0, 300, 100, 10) == 30  # at least 3 dispatches


def test_data_is_real_when_local_else_a_stand_in_of_the_same_example(tmp_path):
  local = measure.shipped_config("mlp_ae")
  local.data = data.data_config("synthetic", num_train=64)
  assert measure.resolve_data(local, "auto", 64) == "synthetic (real)"
  config = measure.shipped_config("lstm_ae_stacked")
  expected = measure.example_shape(config.data, measure.MODELS["lstm_ae_stacked"].shape)
  config.data.root = str(tmp_path)  # nothing there
  used = measure.resolve_data(config, "auto", 64, measure.MODELS["lstm_ae_stacked"].shape)
  assert used.startswith("stand-in 'benchmark_standin' for series_file (DataNotFoundError")
  assert data.example_spec(config.data).shape == expected == (84, 1)
  dataset = data.get_dataset(config.data)
  assert dataset.info.preprocess(dataset.split("train")[0], 0)["x"].shape == expected

  image = measure.shipped_config("vae_mlp")
  measure.resolve_data(image, "synthetic", 64)
  assert (image.data.name, image.data.scale, image.data.binarize) == ("synthetic", "unit", "dynamic")
  sequences = measure.shipped_config("seq_vae_conv")
  spec = data.example_spec(sequences.data)
  measure.resolve_data(sequences, "synthetic", 64)
  assert data.example_spec(sequences.data) == spec and spec.masked


@pytest.mark.skipif(not HAVE_TORCH, reason="the baselines' counterparts are listed in torch_models (torch)")
def test_every_baseline_is_timed_against_its_counterpart():
  for comparison in measure.COMPARISONS:
    config = measure.comparison_config(comparison)
    measure.check_counterpart(config, comparison)
    assert config.optimizer.schedule == "constant" and config.batch_size == comparison.batch
  vqvae = measure.comparison_config(next(c for c in measure.COMPARISONS if c.model == "vqvae"))
  assert (vqvae.model.quantizer.codebook_init, vqvae.model.quantizer.dead_code_threshold) == ("uniform", 0.0)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="this machine has a GPU")
@pytest.mark.slow
def test_gpu_mode_fails_clearly_without_a_gpu(tmp_path):
  done = _suite(["--gpu", "--models", "mlp_ae"], tmp_path)
  assert done.returncode != 0 and "--gpu needs an NVIDIA GPU" in done.stderr


def test_decode_benchmark_reports_every_lever(tmp_path):
  """`benchmarks.decode_images --smoke`: one row per (size, lever), made by the real pipeline from JPEG
  records that decode to the stored size."""
  from benchmarks import decode_images

  records, _ = decode_images.jpeg_records(64, 3)
  assert records[2]["image"].shape == (64, 64, 3) and records[2]["image"].dtype == np.uint8
  assert decode_images.main(["--smoke", "--out", str(tmp_path)]) == 0
  report = json.loads((tmp_path / "decode_images.json").read_text())
  assert report["timing_claims"] is False
  assert [(c["threads"], c["workers"]) for c in report["cases"]] == [(1, 0), (0, 1)]
  assert all(c["images_per_s"] > 0 for c in report["cases"])
  assert "num_workers=1" in (tmp_path / "decode_images.md").read_text()


def test_the_convolution_rewrites_compute_the_convolution():
  """benchmarks.conv_levers' im2col and NCHW rewrites equal lax.conv_general_dilated on the VQ-VAE's
  kinds of convolution (4x4 stride 2, 3x3 and 1x1, explicit and string padding)."""
  from benchmarks import conv_levers

  assert conv_levers._check_rewritten_convs() < 1e-4
  assert set(conv_levers.LEVERS) >= {"baseline", "onednn", "bfloat16", "im2col", "nchw"}
  for t in conv_levers.FUSION_TYPES:  # every value of both library-fusion flags
    assert conv_levers.LEVERS[f"ynn_{t}"][0] == f"--xla_cpu_experimental_ynn_fusion_type={t}"
    assert conv_levers.LEVERS[f"onednn_{t}"][0].endswith(f"--xla_cpu_experimental_onednn_fusion_type={t}")


def _tiny_vqgan_config():
  """The vqgan comparison's config at the smoke run's tiny shape (measure.VQGAN_TINY)."""
  config = measure.comparison_config(next(c for c in measure.COMPARISONS if c.label == "vqgan"))
  for key, value in measure.MODELS["vqgan_cifar10"].smoke:
    measure.set_path(config, key, value)
  return config


@pytest.mark.skipif(not HAVE_TORCH, reason="the PyTorch VQGAN needs torch")
def test_the_pytorch_vqgan_is_built_from_the_config_it_is_timed_against():
  """torch_vqgan's step is read from the ae-jax config: the comparison's config gives the defaults (the
  architecture, losses and optimizers of vqgan_cifar10), the shipped one is refused (its k-means++ codebook
  and re-seeding are not the baseline's), the parameter counts are ae-jax's (full size and the smoke run's
  tiny shape), LPIPS holds ae-jax's weights, and one step updates both players."""
  import torch

  from ae_jax.metrics import lpips
  from ae_jax.models import get_model
  from ae_jax.runner.bottleneck import inspect_model
  from benchmarks import torch_vqgan

  torch.set_num_threads(1)
  name, options, shape = torch_vqgan.JAX_COUNTERPARTS["vqgan"]
  cmp = next(c for c in measure.COMPARISONS if c.label == "vqgan")
  assert torch_vqgan.options_from_config(measure.comparison_config(cmp)) == torch_vqgan.Options()
  with pytest.raises(ValueError, match="codebook_init=uniform"):
    torch_vqgan.options_from_config(measure.shipped_config("vqgan_cifar10"))
  full = torch_vqgan.VQGANWithDiscriminator(torch_vqgan.Options())
  jax_full = inspect_model(get_model(name, input_shape=shape, **options), shape).total_params
  assert sum(p.numel() for p in full.vqgan.parameters()) == jax_full == 4_129_923
  assert sum(p.numel() for p in full.discriminator.parameters()) == 2_765_633  # as ae-jax's patch_gan

  tiny = _tiny_vqgan_config()
  b = torch_vqgan.make(2, torch_vqgan.options_from_config(tiny), seed=1)
  tiny_model = {k: v for k, v in tiny.model.to_dict().items() if k != "name"}
  assert (
    b.num_params == inspect_model(get_model("vqgan", input_shape=shape, **tiny_model), shape).total_params
  )

  x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  y = np.clip(x + 0.3 * np.random.default_rng(1).standard_normal(x.shape), -1, 1).astype(np.float32)
  with torch.no_grad():
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    theirs = b.lpips(nchw(x), nchw(y)).numpy().reshape(-1)
  ours = np.asarray(jax.jit(lpips.distance)(lpips.load_params("vgg"), x, y))
  np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-7)
  assert not any(p.requires_grad for p in b.lpips.parameters())

  before = {k: v.clone() for k, v in b.model.state_dict().items()}
  losses = [float(b.step()) for _ in range(2)]
  after = b.model.state_dict()
  changed = lambda prefix: any(  # noqa: E731
    not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix) and "running" not in k
  )
  assert all(np.isfinite(losses)) and changed("vqgan.") and changed("discriminator.")
  assert 0 < float(b.last["adaptive_weight"]) < 1e4 and np.isfinite(float(b.last["d_loss"]))
  assert set(b.checkpoint_state()) == {"model", "optimizer", "disc_optimizer", "ema"}


@pytest.mark.slow
def test_smoke_run_of_the_vqgan_and_its_pytorch_step(tmp_path):
  """`benchmarks.run --smoke --models vqgan_cifar10`: the VQGAN at its tiny smoke shape (measure.VQGAN_TINY:
  one level, LPIPS's VGG, a one-layer PatchGAN) through every measurement, and the PyTorch VQGAN of the
  same tiny shape beside the counterpart and the shipped config."""
  done = _suite(["--smoke", "--models", "vqgan_cifar10"], tmp_path)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = json.loads((tmp_path / "benchmark.json").read_text())
  assert not report["errors"] and sorted(report["models"]) == ["vqgan_cifar10"]
  m = report["models"]["vqgan_cifar10"]
  assert m["step"]["1"]["flops"] > 0 and m["pipeline"]["batches_per_s"] > 0
  from ae_jax.models import get_model
  from ae_jax.runner.bottleneck import inspect_model

  tiny = {k: v for k, v in _tiny_vqgan_config().model.to_dict().items() if k != "name"}
  assert (
    m["params"]
    == inspect_model(get_model("vqgan", input_shape=(32, 32, 3), **tiny), (32, 32, 3)).total_params
  )
  if HAVE_TORCH:
    c = report["comparisons"]["vqgan"]
    assert set(c["step"]) == {"counterpart", "shipped", "torch"} and c["ratio_loop"] > 0
    assert c["params"]["jax"] == c["params"]["torch"] == m["params"]
    assert "| vqgan |" in (tmp_path / "benchmark.md").read_text()
