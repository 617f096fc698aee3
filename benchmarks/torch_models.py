r"""PyTorch baselines of the five seed architectures, for side-by-side step-time benchmarks against ae-jax.

Each baseline is the architecture written the way its PyTorch source (or a plain PyTorch user) writes it,
with the optimizer, batch size and loss of the matching ae-jax config:

  name             PyTorch module        ae-jax config (experiments/configs/)             batch  Adam
  mlp_ae           seed FC autoencoder   mlp_ae_fashion_mnist                             128    1e-3
  conv_ae          seed CNN autoencoder  conv_ae_fashion_mnist                            128    1e-3
  vqvae            `VQVAE`               vqvae_cifar10 (see below)                        32     3e-4
  lstm_ae_stacked  `LSTMStackedAE`       lstm_anomaly.py (model=lstm_ae_stacked), T = 140  32     1e-3
  seq_vae_conv     `SeqVAEConv`          seq_vae_spoken_digit                             64     1e-3

Losses: MSE (mlp_ae, conv_ae, lstm_ae_stacked, the last with gradients clipped to global norm 1.0);
mse / VQ_DATA_VARIANCE + commitment (vqvae); Bernoulli NLL + Gaussian KL, each summed per example and
averaged over the batch (seq_vae_conv). The learning rate is constant (lstm_anomaly's cosine decay is
left out). The vqvae codebook follows zalandoresearch/pytorch-vq-vae (random start, EMA, no re-seeding):
its ae-jax counterpart is vqvae_cifar10 with codebook_init=uniform and dead_code_threshold=0.

    from benchmarks import torch_models
    torch_models.thread_setup(2)
    b = torch_models.make("conv_ae", 128)
    loss = b.step()  # one training step; `loss` is a tensor, float(loss) synchronises

Parameter counts equal those of the ae-jax models (`JAX_COUNTERPARTS` names the model, options and input
shape to compare with; `PARAM_DIFFERENCE` the exact surplus of a baseline), except that every `nn.LSTM`
layer has two bias vectors (b_ih and b_hh, 4H numbers each) where flax's LSTM cell has one:
lstm_ae_stacked has 4 * (128 + 64 + 64 + 128) = 1,536 parameters more than its ae-jax counterpart.

Inputs are synthetic and fixed (one batch drawn once), channels first where PyTorch's layers expect it:
mlp_ae [B, 784] in [-1, 1] (the seed's flattened rows), conv_ae [B, 1, 28, 28] in [-1, 1], vqvae
[B, 3, 32, 32] in [-0.5, 0.5], lstm_ae_stacked [B, 140, 1] standard normal (batch_first), seq_vae_conv
[B, 201, 32] in [0, 1] (features as channels, 32 frames).

Importing this module needs torch (an optional dependency of ae-jax: nothing under ae_jax/ imports it);
run it from the repository root (`python -m ...`), as it reuses `benchmarks.torch_seed_fashion_mnist`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_seed_fashion_mnist import build_model

DEFAULT_BATCH: dict[str, int] = {
  "mlp_ae": 128,
  "conv_ae": 128,
  "vqvae": 32,
  "lstm_ae_stacked": 32,
  "seq_vae_conv": 64,
}
NAMES = tuple(DEFAULT_BATCH)

# (ae-jax model name, its options, per-example input shape) of each baseline's counterpart.
JAX_COUNTERPARTS: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
  "mlp_ae": ("mlp_ae", {"hidden": (128, 64, 32), "code_dim": 16}, (28, 28, 1)),
  "conv_ae": ("conv_ae", {"code_dim": 16}, (28, 28, 1)),
  "vqvae": (
    "vqvae",
    {
      "hidden": 128,
      "res_hidden": 32,
      "num_res_layers": 2,
      "quantizer": {"name": "vq", "num_codes": 512, "code_dim": 64, "beta": 0.25},
    },
    (32, 32, 3),
  ),
  "lstm_ae_stacked": ("lstm_ae_stacked", {"embedding_dim": 64, "input_shape": (140, 1)}, (140, 1)),
  "seq_vae_conv": (
    "seq_vae_conv",
    {"latent_dim": 256, "kernel_size": 3, "act": "tanh", "bn_momentum": 0.9, "input_shape": (32, 201)},
    (32, 201),
  ),
}
# Trainable parameters of the baseline minus those of its ae-jax counterpart.
PARAM_DIFFERENCE: dict[str, int] = {
  "mlp_ae": 0,
  "conv_ae": 0,
  "vqvae": 0,
  "lstm_ae_stacked": 4 * (128 + 64 + 64 + 128),
  "seq_vae_conv": 0,
}

VQ_DATA_VARIANCE = 0.06  # CIFAR-10's pixel variance in [-0.5, 0.5] (about 0.063), as a constant
SEQ_LENGTH = 140
SPECTROGRAM_FRAMES = 32
SPECTROGRAM_BINS = 201


def thread_setup(threads: int) -> tuple[int, int]:
  """Sets torch's intra-op threads, and its inter-op threads unless they are already fixed (they can be
  set once per process, before any inter-op work). Returns (intra-op, inter-op) threads now in effect."""
  torch.set_num_threads(threads)
  try:
    torch.set_num_interop_threads(threads)
  except RuntimeError:
    pass
  return torch.get_num_threads(), torch.get_num_interop_threads()


# ----------------------------------------------------------------------------- VQ-VAE


class Residual(nn.Module):
  """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))) on [B, h, H, W], with biases as in ae-jax's residual stack.

  zalandoresearch/pytorch-vq-vae writes these two convs with bias=False and an in-place first ReLU, which
  also rectifies the skip path; here x is added unchanged, as ae-jax (and Sonnet) do.
  """

  def __init__(self, in_channels: int, num_hiddens: int, num_residual_hiddens: int) -> None:
    super().__init__()
    self._block = nn.Sequential(
      nn.ReLU(),
      nn.Conv2d(in_channels, num_residual_hiddens, kernel_size=3, stride=1, padding=1),
      nn.ReLU(),
      nn.Conv2d(num_residual_hiddens, num_hiddens, kernel_size=1, stride=1),
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x + self._block(x)


class ResidualStack(nn.Module):
  """`num_residual_layers` residual blocks, then ReLU."""

  def __init__(
    self, in_channels: int, num_hiddens: int, num_residual_layers: int, num_residual_hiddens: int
  ) -> None:
    super().__init__()
    self._layers = nn.ModuleList(
      [Residual(in_channels, num_hiddens, num_residual_hiddens) for _ in range(num_residual_layers)]
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for layer in self._layers:
      x = layer(x)
    return F.relu(x)


class Encoder(nn.Module):
  """[B, C, H, W] -> [B, h, H/4, W/4]: two 4x4 stride-2 convs, a 3x3 conv and a residual stack."""

  def __init__(
    self, in_channels: int, num_hiddens: int, num_residual_layers: int, num_residual_hiddens: int
  ) -> None:
    super().__init__()
    self._conv_1 = nn.Conv2d(in_channels, num_hiddens // 2, kernel_size=4, stride=2, padding=1)
    self._conv_2 = nn.Conv2d(num_hiddens // 2, num_hiddens, kernel_size=4, stride=2, padding=1)
    self._conv_3 = nn.Conv2d(num_hiddens, num_hiddens, kernel_size=3, stride=1, padding=1)
    self._residual_stack = ResidualStack(num_hiddens, num_hiddens, num_residual_layers, num_residual_hiddens)

  def forward(self, inputs: torch.Tensor) -> torch.Tensor:
    x = F.relu(self._conv_1(inputs))
    x = F.relu(self._conv_2(x))
    x = self._conv_3(x)
    return self._residual_stack(x)


class Decoder(nn.Module):
  """[B, D, h, w] -> [B, C, 4h, 4w]: a 3x3 conv, a residual stack, two 4x4 stride-2 transposed convs."""

  def __init__(
    self,
    in_channels: int,
    num_hiddens: int,
    num_residual_layers: int,
    num_residual_hiddens: int,
    out_channels: int = 3,
  ) -> None:
    super().__init__()
    self._conv_1 = nn.Conv2d(in_channels, num_hiddens, kernel_size=3, stride=1, padding=1)
    self._residual_stack = ResidualStack(num_hiddens, num_hiddens, num_residual_layers, num_residual_hiddens)
    self._conv_trans_1 = nn.ConvTranspose2d(num_hiddens, num_hiddens // 2, kernel_size=4, stride=2, padding=1)
    self._conv_trans_2 = nn.ConvTranspose2d(
      num_hiddens // 2, out_channels, kernel_size=4, stride=2, padding=1
    )

  def forward(self, inputs: torch.Tensor) -> torch.Tensor:
    x = self._conv_1(inputs)
    x = self._residual_stack(x)
    x = F.relu(self._conv_trans_1(x))
    return self._conv_trans_2(x)


class VectorQuantizerEMA(nn.Module):
  """Nearest-code quantiser whose codebook [K, D] follows exponential moving averages of its assignments.

  In training mode every forward pass updates the EMA cluster sizes (stored Laplace-smoothed) and the EMA
  sums of the assigned vectors, then sets the codebook to sums / sizes (no dead-code re-seeding). The
  codebook and its statistics are buffers, not re-created `nn.Parameter`s: nothing here is trained by
  gradients, so they stay out of the optimizer and the parameter count. Returns (commitment loss,
  quantized [B, D, H, W] (straight-through), perplexity, one-hot encodings [B*H*W, K]).
  """

  def __init__(
    self,
    num_embeddings: int,
    embedding_dim: int,
    commitment_cost: float,
    decay: float,
    epsilon: float = 1e-5,
  ) -> None:
    super().__init__()
    self._embedding_dim = embedding_dim
    self._num_embeddings = num_embeddings
    self._commitment_cost = commitment_cost
    self._decay = decay
    self._epsilon = epsilon
    self.register_buffer("_embedding", torch.randn(num_embeddings, embedding_dim))
    self.register_buffer("_ema_cluster_size", torch.zeros(num_embeddings))
    self.register_buffer("_ema_w", torch.randn(num_embeddings, embedding_dim))

  def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    inputs = inputs.permute(0, 2, 3, 1).contiguous()  # BCHW -> BHWC
    input_shape = inputs.shape
    flat_input = inputs.view(-1, self._embedding_dim)

    with torch.no_grad():
      distances = (
        torch.sum(flat_input**2, dim=1, keepdim=True)
        + torch.sum(self._embedding**2, dim=1)
        - 2 * torch.matmul(flat_input, self._embedding.t())
      )
      encoding_indices = torch.argmin(distances, dim=1).unsqueeze(1)
      encodings = torch.zeros(encoding_indices.shape[0], self._num_embeddings, device=inputs.device)
      encodings.scatter_(1, encoding_indices, 1)
      quantized = torch.matmul(encodings, self._embedding).view(input_shape)

      if self.training:
        self._ema_cluster_size.mul_(self._decay).add_(torch.sum(encodings, 0), alpha=1 - self._decay)
        n = torch.sum(self._ema_cluster_size)
        self._ema_cluster_size.copy_(
          (self._ema_cluster_size + self._epsilon) / (n + self._num_embeddings * self._epsilon) * n
        )
        dw = torch.matmul(encodings.t(), flat_input)
        self._ema_w.mul_(self._decay).add_(dw, alpha=1 - self._decay)
        self._embedding.copy_(self._ema_w / self._ema_cluster_size.unsqueeze(1))

    e_latent_loss = F.mse_loss(quantized, inputs)
    loss = self._commitment_cost * e_latent_loss

    quantized = inputs + (quantized - inputs).detach()
    avg_probs = torch.mean(encodings, dim=0)
    perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))
    return loss, quantized.permute(0, 3, 1, 2).contiguous(), perplexity, encodings


class VQVAE(nn.Module):
  """VQ-VAE with residual stacks and an EMA codebook: [B, 3, H, W] -> (vq loss, recon, perplexity)."""

  def __init__(
    self,
    num_hiddens: int = 128,
    num_residual_layers: int = 2,
    num_residual_hiddens: int = 32,
    num_embeddings: int = 512,
    embedding_dim: int = 64,
    commitment_cost: float = 0.25,
    decay: float = 0.99,
    epsilon: float = 1e-5,
    in_channels: int = 3,
  ) -> None:
    super().__init__()
    self._encoder = Encoder(in_channels, num_hiddens, num_residual_layers, num_residual_hiddens)
    self._pre_vq_conv = nn.Conv2d(num_hiddens, embedding_dim, kernel_size=1, stride=1)
    self._vq_vae = VectorQuantizerEMA(num_embeddings, embedding_dim, commitment_cost, decay, epsilon)
    self._decoder = Decoder(
      embedding_dim, num_hiddens, num_residual_layers, num_residual_hiddens, out_channels=in_channels
    )

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = self._pre_vq_conv(self._encoder(x))
    loss, quantized, perplexity, _ = self._vq_vae(z)
    x_recon = self._decoder(quantized)
    return loss, x_recon, perplexity


# ----------------------------------------------------------------------------- LSTM autoencoder


class LSTMStackedAE(nn.Module):
  """LSTM(2E) -> LSTM(E), last hidden state -> repeated over time -> LSTM(E) -> LSTM(2E) -> Linear(F).

  Inputs [B, T, F] (batch_first); returns the reconstruction [B, T, F]. `encode` gives the code [B, E].
  """

  def __init__(self, n_features: int = 1, embedding_dim: int = 64) -> None:
    super().__init__()
    hidden = 2 * embedding_dim
    self.enc1 = nn.LSTM(n_features, hidden, batch_first=True)
    self.enc2 = nn.LSTM(hidden, embedding_dim, batch_first=True)
    self.dec1 = nn.LSTM(embedding_dim, embedding_dim, batch_first=True)
    self.dec2 = nn.LSTM(embedding_dim, hidden, batch_first=True)
    self.output_layer = nn.Linear(hidden, n_features)

  def encode(self, x: torch.Tensor) -> torch.Tensor:
    """[B, T, F] -> [B, E]: the second LSTM's hidden state after the last step."""
    x, _ = self.enc1(x)
    _, (hidden_n, _) = self.enc2(x)
    return hidden_n[-1]

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    code = self.encode(x)
    x = code.unsqueeze(1).repeat(1, x.shape[1], 1)
    x, _ = self.dec1(x)
    x, _ = self.dec2(x)
    return self.output_layer(x)


# ----------------------------------------------------------------------------- sequence VAE


class CausalConv1d(nn.Conv1d):
  """Conv1d over [B, C, T] whose output at t sees inputs t - (k-1)*d ... t only: the input is left-padded
  with (kernel_size - 1) * dilation zeros, so the output keeps length T."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
    super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
    self.left_padding = (kernel_size - 1) * dilation

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return super().forward(F.pad(x, (self.left_padding, 0)))


class SeqVAEConv(nn.Module):
  """Causal-conv VAE over spectrogram frames with one Gaussian latent per frame.

  Encoder: causal convs F -> Z -> Z -> 2Z (each followed by tanh and BatchNorm1d), a 1x1 conv 2Z -> 2Z
  (mean and log-variance). Decoder: 1x1 convs Z -> F -> F -> F -> F with tanh and BatchNorm1d between.
  Inputs [B, F, T]; returns (logits [B, F, T], mean [B, Z, T], logvar [B, Z, T]). Every sequence is taken
  to be T real frames: there is no padding mask (the synthetic batch has no padding).
  """

  def __init__(
    self, n_features: int = 201, latent_dim: int = 256, kernel_size: int = 3, bn_momentum: float = 0.1
  ) -> None:
    super().__init__()
    z, f, k, m = latent_dim, n_features, kernel_size, bn_momentum
    self.encoder = nn.Sequential(
      CausalConv1d(f, z, k),
      nn.Tanh(),
      nn.BatchNorm1d(z, momentum=m),
      CausalConv1d(z, z, k),
      nn.Tanh(),
      nn.BatchNorm1d(z, momentum=m),
      CausalConv1d(z, 2 * z, k),
      nn.Tanh(),
      nn.BatchNorm1d(2 * z, momentum=m),
      nn.Conv1d(2 * z, 2 * z, 1),
    )
    self.decoder = nn.Sequential(
      nn.Conv1d(z, f, 1),
      nn.Tanh(),
      nn.BatchNorm1d(f, momentum=m),
      nn.Conv1d(f, f, 1),
      nn.Tanh(),
      nn.BatchNorm1d(f, momentum=m),
      nn.Conv1d(f, f, 1),
      nn.Tanh(),
      nn.BatchNorm1d(f, momentum=m),
      nn.Conv1d(f, f, 1),
    )

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, logvar = self.encoder(x).chunk(2, dim=1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    return self.decoder(z), mean, logvar


# ----------------------------------------------------------------------------- losses and the factory


def _mse_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
  return F.mse_loss(model(x), x)


def _vqvae_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
  vq_loss, x_recon, _ = model(x)
  return F.mse_loss(x_recon, x) / VQ_DATA_VARIANCE + vq_loss


def _negative_elbo(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
  logits, mean, logvar = model(x)
  batch = x.shape[0]
  nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / batch
  kl = 0.5 * torch.sum(torch.exp(logvar) + mean * mean - 1.0 - logvar) / batch
  return nll + kl


@dataclasses.dataclass
class Baseline:
  """A PyTorch model with its Adam optimizer, a fixed synthetic batch and its training loss."""

  name: str
  model: nn.Module
  optimizer: torch.optim.Optimizer
  inputs: torch.Tensor
  loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]
  grad_clip_norm: float | None = None

  @property
  def num_params(self) -> int:
    """Trainable parameters (buffers such as BatchNorm statistics or an EMA codebook excluded)."""
    return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

  def loss(self) -> torch.Tensor:
    """The training loss on `inputs` (a forward pass in training mode, with autograd)."""
    return self.loss_fn(self.model, self.inputs)

  def step(self) -> torch.Tensor:
    """One training step: zero_grad, forward, loss, backward, (clip,) optimizer step. Returns the loss
    before the update, detached; nothing here waits for it, so the caller decides when to synchronise."""
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.loss_fn(self.model, self.inputs)
    loss.backward()
    if self.grad_clip_norm is not None:
      nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
    self.optimizer.step()
    return loss.detach()


def _inputs(name: str, batch_size: int, gen: torch.Generator) -> torch.Tensor:
  if name == "mlp_ae":
    return torch.rand(batch_size, 28 * 28, generator=gen) * 2.0 - 1.0
  if name == "conv_ae":
    return torch.rand(batch_size, 1, 28, 28, generator=gen) * 2.0 - 1.0
  if name == "vqvae":
    return torch.rand(batch_size, 3, 32, 32, generator=gen) - 0.5
  if name == "lstm_ae_stacked":
    return torch.randn(batch_size, SEQ_LENGTH, 1, generator=gen)
  return torch.rand(batch_size, SPECTROGRAM_BINS, SPECTROGRAM_FRAMES, generator=gen)


def make(name: str, batch_size: int | None = None, *, seed: int = 0) -> Baseline:
  """The baseline `name` (one of `NAMES`) at `batch_size` (default: its config's, `DEFAULT_BATCH`).

  `seed` fixes the initialisation (torch's global generator) and the synthetic batch. The model is in
  training mode (BatchNorm uses batch statistics, the VQ codebook is updated).
  """
  if name not in DEFAULT_BATCH:
    raise ValueError(f"unknown baseline '{name}'; choose one of {list(NAMES)}")
  batch_size = DEFAULT_BATCH[name] if batch_size is None else batch_size
  torch.manual_seed(seed)
  grad_clip_norm = None
  if name == "mlp_ae":
    model, lr, loss_fn = build_model("mlp"), 1e-3, _mse_loss
  elif name == "conv_ae":
    model, lr, loss_fn = build_model("conv"), 1e-3, _mse_loss
  elif name == "vqvae":
    model, lr, loss_fn = VQVAE(), 3e-4, _vqvae_loss
  elif name == "lstm_ae_stacked":
    model, lr, loss_fn = LSTMStackedAE(n_features=1, embedding_dim=64), 1e-3, _mse_loss
    grad_clip_norm = 1.0
  else:
    model, lr, loss_fn = SeqVAEConv(SPECTROGRAM_BINS, latent_dim=256, kernel_size=3), 1e-3, _negative_elbo
  model.train()
  optimizer = torch.optim.Adam(model.parameters(), lr=lr)
  inputs = _inputs(name, batch_size, torch.Generator().manual_seed(seed))
  return Baseline(name, model, optimizer, inputs, loss_fn, grad_clip_norm)
