"""The PyTorch baselines of benchmarks/torch_models.py: they train, and mirror the ae-jax models' sizes."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from ae_jax.models import get_model  # noqa: E402
from ae_jax.runner.bottleneck import inspect_model  # noqa: E402
from benchmarks import torch_models  # noqa: E402

# Small batches keep the tests fast; sizes and losses do not depend on the batch.
TEST_BATCH = {
  "mlp_ae": 16,
  "conv_ae": 16,
  "vqvae": 4,
  "lstm_ae_stacked": 4,
  "seq_vae_conv": 8,
}


@pytest.fixture(scope="module", autouse=True)
def _threads():
  torch_models.thread_setup(1)


def _jax_params(name: str) -> int:
  model_name, options, input_shape = torch_models.JAX_COUNTERPARTS[name]
  return inspect_model(get_model(model_name, **options), input_shape).total_params


def test_names_and_default_batches():
  assert set(torch_models.NAMES) == set(TEST_BATCH) == set(torch_models.JAX_COUNTERPARTS)
  assert torch_models.DEFAULT_BATCH == {
    "mlp_ae": 128,
    "conv_ae": 128,
    "vqvae": 32,
    "lstm_ae_stacked": 32,
    "seq_vae_conv": 64,
  }
  with pytest.raises(ValueError, match="unknown baseline"):
    torch_models.make("mlp")


@pytest.mark.parametrize("name", list(TEST_BATCH))
def test_parameter_count_matches_jax(name):
  baseline = torch_models.make(name, TEST_BATCH[name])
  assert baseline.num_params - _jax_params(name) == torch_models.PARAM_DIFFERENCE[name]


def test_lstm_difference_is_the_second_bias():
  model = torch_models.make("lstm_ae_stacked", 2).model
  hh_biases = sum(p.numel() for n, p in model.named_parameters() if ".bias_hh_" in n)
  assert hh_biases == torch_models.PARAM_DIFFERENCE["lstm_ae_stacked"] == 1536


@pytest.mark.parametrize("name", list(TEST_BATCH))
def test_step_is_finite_and_loss_decreases(name):
  baseline = torch_models.make(name, TEST_BATCH[name], seed=1)
  losses = [baseline.step() for _ in range(6)]
  assert all(isinstance(loss, torch.Tensor) and not loss.requires_grad for loss in losses)
  values = [float(loss) for loss in losses]
  assert all(math.isfinite(v) for v in values), values
  assert values[-1] < values[0], values


def test_full_batch_inputs():
  shapes = {name: tuple(torch_models.make(name).inputs.shape) for name in torch_models.NAMES}
  assert shapes == {
    "mlp_ae": (128, 784),
    "conv_ae": (128, 1, 28, 28),
    "vqvae": (32, 3, 32, 32),
    "lstm_ae_stacked": (32, 140, 1),
    "seq_vae_conv": (64, 201, 32),
  }
  assert torch_models.make("mlp_ae", 256).inputs.shape == (256, 784)


def test_output_shapes():
  def run(name):
    b = torch_models.make(name, 2)
    with torch.no_grad():
      return b.inputs, b.model(b.inputs)

  for name in ("mlp_ae", "conv_ae", "lstm_ae_stacked"):
    x, recon = run(name)
    assert recon.shape == x.shape, name
  x, (vq_loss, recon, perplexity) = run("vqvae")
  assert recon.shape == x.shape and vq_loss.shape == perplexity.shape == ()
  x, (logits, mean, logvar) = run("seq_vae_conv")
  assert logits.shape == x.shape == (2, 201, 32)
  assert mean.shape == logvar.shape == (2, 256, 32)
  lstm = torch_models.make("lstm_ae_stacked", 2)
  assert lstm.model.encode(lstm.inputs).shape == (2, 64)


def test_optimizers_and_clipping():
  for name, lr in (("mlp_ae", 1e-3), ("conv_ae", 1e-3), ("vqvae", 3e-4), ("seq_vae_conv", 1e-3)):
    b = torch_models.make(name, 2)
    assert isinstance(b.optimizer, torch.optim.Adam) and b.optimizer.param_groups[0]["lr"] == lr
    assert b.grad_clip_norm is None
  lstm = torch_models.make("lstm_ae_stacked", 2)
  assert lstm.optimizer.param_groups[0]["lr"] == 1e-3 and lstm.grad_clip_norm == 1.0


def test_vq_ema_codebook_updates_without_gradients():
  b = torch_models.make("vqvae", 2)
  vq = b.model._vq_vae
  before = vq._embedding.clone()
  b.step()
  assert not any(buf.requires_grad for buf in vq.buffers())
  assert not torch.equal(before, vq._embedding)
  assert float(vq._ema_cluster_size.sum()) == pytest.approx(0.01 * 2 * 8 * 8, rel=1e-4)


def test_causal_conv_is_causal():
  conv = torch_models.CausalConv1d(2, 3, kernel_size=3, dilation=2)
  x = torch.randn(1, 2, 10)
  y = x.clone()
  y[..., 6:] += 1.0
  with torch.no_grad():
    a, b = conv(x), conv(y)
  assert a.shape == (1, 3, 10)
  assert torch.allclose(a[..., :6], b[..., :6]) and not torch.allclose(a[..., 6:], b[..., 6:])


def test_seq_vae_batchnorm_momentum_matches_flax():
  model = torch_models.make("seq_vae_conv", 2).model
  norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
  assert len(norms) == 6 and all(m.momentum == pytest.approx(0.1) and m.eps == 1e-5 for m in norms)
  _, options, _ = torch_models.JAX_COUNTERPARTS["seq_vae_conv"]
  assert 1.0 - options["bn_momentum"] == pytest.approx(norms[0].momentum)


def test_thread_setup_is_repeatable():
  intra, interop = torch_models.thread_setup(1)
  assert intra == 1 and interop >= 1
  assert torch_models.thread_setup(1)[0] == 1
