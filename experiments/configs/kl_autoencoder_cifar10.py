r"""latent-diffusion's KL autoencoder (AutoencoderKL) on CIFAR-10, small enough to train on two CPU cores.

    python -m experiments.main --config experiments/configs/kl_autoencoder_cifar10.py \
        --workdir runs/kl_autoencoder_cifar10

The architecture of latent-diffusion's first stages at CIFAR scale: ch 64, ch_mult (1, 2, 2) (32 -> 8), 1
ResnetBlock per level (2 in the decoder's), attention only at the lowest resolution (8) and in the middle,
z_channels 4 and embed_dim 4: an 8x8x4 Gaussian latent (256 numbers per 3,072-value image). Pixels in
[-1, 1]; in training z is sampled from q(z|x) (the "sample" rng), at evaluation it is the posterior mean.

Objective: latent-diffusion's `LPIPSWithDiscriminator` with its learned output log-variance fixed at 0: the
L1 distance plus LPIPS (VGG, perceptual_weight 1.0), both summed over the image's pixels, plus kl_weight 1e-6
times the KL summed over the latent's elements; ae-jax's `l1` and `lpips` terms are per image, so their
weight is the pixel count (32 x 32 x 3). From step 2,000 on the hinge generator term (weight 0.5, the
reference's disc_weight) scaled by the adaptive weight, against taming's PatchGAN (vqgan_cifar10.py's).
Evaluation uses a weight EMA (decay 0.999). Data, batch (32), optimizer (Adam 3e-4), schedule (10,000
steps) and evaluators (test losses, PSNR/SSIM) are vqvae_cifar10.py's, with test
LPIPS and rFD added.
"""

import ml_collections

from ae_jax import evaluators
from ae_jax.models import model_config
from ae_jax.models.discriminators import discriminator_config
from experiments.configs import vqgan_cifar10, vqvae_cifar10

ARCHITECTURE = dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=4)
PIXELS = 32 * 32 * 3


def get_config(arg: str | None = None):
  del arg  # no variants
  config = vqvae_cifar10.get_config()  # data, batch, optimizer, schedule and evaluators of the VQ-VAE run
  config.model = model_config("kl_autoencoder", **ARCHITECTURE, embed_dim=4)
  config.data.scale = "symmetric"  # [-1, 1], as latent-diffusion
  del config.evals["codebook"]  # no discrete codes
  config.loss = ml_collections.ConfigDict()
  config.loss.l1 = float(PIXELS)  # latent-diffusion's nll: |x - recon| summed over pixels
  config.loss.kl = 1e-6  # kl_weight
  config.loss.mse = 0.0  # reported
  config.loss.lpips = float(PIXELS)  # perceptual_weight 1.0, added to every pixel's L1 as the reference
  config.loss.gan_hinge = 0.5  # latent-diffusion's disc_weight, times the adaptive weight
  config.adversarial.discriminator = discriminator_config("patch_gan", ndf=64, n_layers=3)
  config.adversarial.loss = ml_collections.ConfigDict({"disc_hinge": 1.0})
  config.adversarial.start = vqgan_cifar10.DISC_START
  config.adversarial.optimizer.learning_rate = 3e-4
  config.ema_decay = 0.999
  config.evals.lpips = evaluators.section("lpips", split="test")
  config.evals.rfd = evaluators.section("rfd", split="test")  # feature-network Fréchet distance
  return config
