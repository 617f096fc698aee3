r"""latent-diffusion's kl-f8 first stage (AutoencoderKL; models/first_stage_models/kl-f8/config.yaml).

    python -m experiments.main --config experiments/configs/kl_f8.py --config.data.data_dir=/data/tfds \
        --workdir runs/kl_f8

The published autoencoder: ch 128, ch_mult (1, 2, 4, 4) (256 -> a 32x32x4 latent), 2 ResnetBlocks per level,
no attention but the middle's, z_channels 4, embed_dim 4, dropout 0, resolution 256: 83,653,863 parameters
(tests/test_taming.py counts them layer by layer; the count third-party code reports for Stable Diffusion
v1's VAE, which has this architecture).

Objective (LPIPSWithDiscriminator without its perceptual and GAN parts, its learned output log-variance
fixed at 0): the L1 distance summed over the 256 x 256 x 3 pixels, plus kl_weight 1e-6 times the KL summed
over the latent's elements. ae-jax's `l1` term averages over pixels, so its weight is the pixel count.

Optimizer: Adam (betas 0.5, 0.9) at base_learning_rate 4.5e-6 per image of the batch (latent-diffusion's
main.py scales it by the batch size); batch 16. Data: the reference trained on OpenImages (images rescaled to
384, random 256 crops); here tfds `open_images_v4` prepared in --config.data.data_dir, random square crops of
the shorter side resized to 256 (ae-jax crops in source pixels, so the reference's 2/3-side crop is not
reproduced; --config.data.crop_size sets a fixed side), center crops for evaluation, pixels in [-1, 1].

The rest of LPIPSWithDiscriminator: LPIPS (VGG, perceptual_weight 1.0) summed over pixels as the L1 term,
the hinge generator term (disc_weight 0.5) with the adaptive weight through `KLAutoencoder.last_layer`, from
disc_start 50001, against the 3-layer PatchGAN. Not reproduced: the learned output log-variance (fixed at 0).
"""

import ml_collections

from ae_jax import evaluators
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.models.discriminators import discriminator_config
from ae_jax.runner.config import default_config

BASE_LEARNING_RATE = 4.5e-6  # per image of the batch
ARCHITECTURE = dict(
  ch=128,
  ch_mult=(1, 2, 4, 4),
  num_res_blocks=2,
  attn_resolutions=(),
  resolution=256,
  z_channels=4,
  dropout=0.0,
)
PIXELS = 256 * 256 * 3


def get_config(arg: str | None = None):
  del arg  # no variants
  config = default_config()
  config.model = model_config("kl_autoencoder", **ARCHITECTURE, embed_dim=4)
  config.loss = ml_collections.ConfigDict()
  config.loss.l1 = float(PIXELS)  # nll: |x - recon| summed over pixels
  config.loss.kl = 1e-6  # kl_weight
  config.loss.mse = 0.0  # reported
  config.loss.lpips = float(PIXELS)  # perceptual_weight 1.0, summed over pixels as the L1 term
  config.loss.gan_hinge = 0.5  # disc_weight, times the adaptive weight (the learned logvar is fixed at 0)
  config.adversarial.discriminator = discriminator_config("patch_gan", ndf=64, n_layers=3)
  config.adversarial.start = 50_001
  config.data = data_config(
    "tfds",
    tfds_name="open_images_v4",
    label_key="",  # detection annotations, no class label
    test_split="validation",
    image_size=256,
    crop="random",  # training; evaluation crops the center
    scale="symmetric",
    num_threads=16,
  )
  config.batch_size = 16
  config.eval_batch_size = 64
  config.total_steps = 500_000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = BASE_LEARNING_RATE * config.batch_size
  config.optimizer.b1, config.optimizer.b2 = 0.5, 0.9
  config.log_every = 500
  config.evals.test = evaluators.section("losses", split="test", every=10_000, max_examples=10_000)
  config.evals.quality = evaluators.section("image_quality", split="test")
  config.checkpoint_every = 10_000
  return config
