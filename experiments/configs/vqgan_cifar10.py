r"""VQGAN (taming-transformers' encoder and decoder) on CIFAR-10, small enough to train on two CPU cores.

    python -m experiments.main --config experiments/configs/vqgan_cifar10.py --workdir runs/vqgan_cifar10

The architecture of taming's VQGAN at CIFAR scale: ch 64, ch_mult (1, 2, 2) (32 -> 8, the 8x8 latent grid of
vqvae_cifar10.py), 1 ResnetBlock per level (2 in the decoder's), attention only at the lowest resolution (8)
and in the middle, z_channels 64, and vqvae_cifar10.py's codebook: K=512 codes of D=64 (the reference's
embed_dim), EMA (decay 0.99) with k-means++ seeds and dead-code re-seeding, beta 0.25. Pixels in [-1, 1]
(taming's scale). The objective is taming's `VQLPIPSWithDiscriminator`: the L1 distance averaged over
pixels plus LPIPS (VGG, weight 1.0), the quantizer's terms, and from step 2,000 on the hinge generator term
(`gan_hinge`, weight 0.8, taming's disc_weight) scaled by the adaptive weight through the decoder's last
layer, against taming's PatchGAN (3 layers, ndf 64, BatchNorm) trained with the hinge loss and Adam (lr 3e-4,
betas 0.5, 0.9). Evaluation, code caches and samples use a weight EMA (decay 0.999). Data, batch (32),
optimizer (Adam 3e-4), schedule (10,000 steps) and evaluators (test losses, codebook usage, PSNR/SSIM) are
vqvae_cifar10.py's, with test LPIPS and the feature-network reconstruction Fréchet distance (rFD) added.

An argument after the path switches the quantizer exactly as vqvae_cifar10.py's does
(`vqgan_cifar10.py:quantizer=fsq`, `quantizer=lfq`, ...; see that file); `vqgan_cifar10.py:disc=0` trains
without the discriminator (L1 + LPIPS + the quantizer's terms).
"""

import ml_collections

from ae_jax import evaluators
from ae_jax.models import model_config
from ae_jax.models.discriminators import discriminator_config
from ae_jax.quantizers import quantizer_config
from experiments.configs import vqvae_cifar10

ARCHITECTURE = dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=64)
ARGS = (*vqvae_cifar10.ARGS, "disc=0")  # checked by the config sweep
DISC_START = 2000


def get_config(arg: str | None = None):
  """The CIFAR-10 VQGAN; `arg` (e.g. "quantizer=lfq") switches the quantizer as vqvae_cifar10.py's."""
  config = vqvae_cifar10.get_config()  # data, batch, optimizer, schedule and evaluators of the VQ-VAE run
  config.model = model_config("vqgan", **ARCHITECTURE, quantizer=quantizer_config("vq", **vqvae_cifar10.VQ))
  config.data.scale = "symmetric"  # [-1, 1], as taming
  config.loss = ml_collections.ConfigDict()
  config.loss.l1 = 1.0  # taming's rec_loss: |x - recon| averaged over pixels
  config.loss.mse = 0.0  # reported
  config.loss.codebook = 1.0  # zero with the EMA codebook; used with --config.model.quantizer.ema=False
  config.loss.commitment = 1.0  # already scaled by beta
  config.loss.lpips = 1.0  # taming's perceptual_weight
  config.loss.gan_hinge = 0.8  # taming's disc_weight, times the adaptive weight from DISC_START on
  config.adversarial.discriminator = discriminator_config("patch_gan", ndf=64, n_layers=3)
  config.adversarial.loss = ml_collections.ConfigDict({"disc_hinge": 1.0})
  config.adversarial.start = DISC_START
  config.adversarial.optimizer.learning_rate = 3e-4
  config.ema_decay = 0.999
  config.evals.lpips = evaluators.section("lpips", split="test")
  config.evals.rfd = evaluators.section("rfd", split="test")  # feature-network Fréchet distance
  rest = ",".join(item for item in (arg or "").split(",") if item and item.replace(" ", "") != "disc=0")
  if arg and rest != arg:  # disc=0: the perceptual autoencoder without its discriminator
    del config.loss["gan_hinge"]
    config.adversarial.discriminator = ml_collections.ConfigDict({"name": ""})
  if rest:
    vqvae_cifar10._apply(config, rest)
  return config
