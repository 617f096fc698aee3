r"""VQGAN (taming-transformers' encoder and decoder) on Fashion-MNIST, small: a few minutes on two CPU cores.

    python -m experiments.main --config experiments/configs/vqgan_fashion_mnist.py --workdir runs/vqgan_fmnist

The taming architecture at 28x28x1: ch 32, ch_mult (1, 2, 2) (levels at 28, 14, 7: a 7x7 code grid as
vqvae_fashion_mnist.py's), 1 ResnetBlock per level (2 in the decoder's), attention at the lowest resolution
(7) and in the middle, z_channels 32, GroupNorm with 32 groups; vqvae_fashion_mnist.py's codebook: K=256
codes of D=32 (the reference's embed_dim), EMA (decay 0.99) with k-means++ seeds and dead-code re-seeding,
beta 0.25. Pixels in [-1, 1] (taming's scale); objective taming's: the L1 distance averaged over pixels,
LPIPS (VGG, weight 1.0; the gray images repeated to RGB), the quantizer's terms and from step 500 on the hinge
generator term (weight 0.8) with the adaptive weight, against a 2-layer PatchGAN (28 px images are too
small for 3). Batch 64, Adam 3e-4, 2,000 steps, a weight EMA (0.999); evaluators: test losses, codebook
usage, PSNR/SSIM, test LPIPS.
"""

import ml_collections

from ae_jax import evaluators
from ae_jax.models import model_config
from ae_jax.models.discriminators import discriminator_config
from ae_jax.quantizers import quantizer_config
from experiments.configs import vqvae_fashion_mnist

ARCHITECTURE = dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), z_channels=32)
VQ = dict(num_codes=256, code_dim=32, beta=0.25, ema=True, decay=0.99, codebook_init="kmeans++")


def get_config():
  config = vqvae_fashion_mnist.get_config()  # data, batch, optimizer, schedule and evaluators of the VQ-VAE
  config.model = model_config(
    "vqgan", **ARCHITECTURE, quantizer=quantizer_config("vq", **VQ, dead_code_threshold=1.0)
  )
  config.data.scale = "symmetric"  # [-1, 1], as taming
  config.loss = ml_collections.ConfigDict()
  config.loss.l1 = 1.0  # taming's rec_loss: |x - recon| averaged over pixels
  config.loss.mse = 0.0  # reported
  config.loss.codebook = 1.0  # zero with the EMA codebook; used with --config.model.quantizer.ema=False
  config.loss.commitment = 1.0  # already scaled by beta
  config.loss.lpips = 1.0  # taming's perceptual_weight
  config.loss.gan_hinge = 0.8  # taming's disc_weight, times the adaptive weight
  config.adversarial.discriminator = discriminator_config("patch_gan", ndf=64, n_layers=2)
  config.adversarial.start = 500
  config.adversarial.optimizer.learning_rate = 3e-4
  config.ema_decay = 0.999
  config.evals.quality = evaluators.section("image_quality", split="test")
  config.evals.lpips = evaluators.section("lpips", split="test")
  return config
