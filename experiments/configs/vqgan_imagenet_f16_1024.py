r"""taming-transformers' VQGAN f16 with 1,024 codes on ImageNet at 256x256 (configs/imagenet_vqgan.yaml).

    python -m experiments.main --config experiments/configs/vqgan_imagenet_f16_1024.py \
        --config.data.data_dir=/data/tfds --workdir runs/vqgan_imagenet_f16_1024

The published first stage: ch 128, ch_mult (1, 1, 2, 2, 4) (256 -> 16x16 codes), 2 ResnetBlocks per level,
attention at resolution 16 (and in the middle), z_channels 256, dropout 0, a trained codebook of 1,024
codes of embed_dim 256: 72,141,699 parameters (tests/test_taming.py counts them layer by layer). Taming's
quantizer (VectorQuantizer2 with legacy=True, beta=0.25) puts beta on the codebook term:
mean |sg(z_q) - z_e|^2 + 0.25 mean |z_q - sg(z_e)|^2, here the quantizer's beta=1.0 (its commitment term)
with loss weights codebook 0.25 and commitment 1.0. One difference: ae-jax seeds the codebook uniform with
variance 1/D, taming uniform in +-1/K. Reconstruction: the L1 distance averaged over pixels (taming's
rec_loss, codebook_weight 1.0).

Optimizer: Adam (betas 0.5, 0.9) at taming's base_learning_rate 4.5e-6 per image of the batch (its main.py
scales it by the batch size); batch 16 (256x256, float32; --config.dtype=bfloat16 for more). Data: tfds
`imagenet2012` prepared in --config.data.data_dir (ImageNet is a manual download), pixels in [-1, 1],
random square crops of the shorter side resized to 256 in training (taming: shorter side to 256, random
256 crop), center crops for evaluation; the validation split is the test split.

The rest of taming's VQLPIPSWithDiscriminator: LPIPS (VGG, perceptual_weight 1.0), the hinge generator term
(disc_weight 0.8) with the adaptive weight through `VQGAN.last_layer`, from disc_start 250001, against the
3-layer PatchGAN (ndf 64) trained with the hinge loss and Adam (betas 0.5, 0.9) at the model's rate.
"""

import ml_collections

from ae_jax import evaluators
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.models.discriminators import discriminator_config
from ae_jax.quantizers import quantizer_config
from ae_jax.runner.config import default_config

BASE_LEARNING_RATE = 4.5e-6  # taming's, per image of the batch
ARCHITECTURE = dict(
  ch=128,
  ch_mult=(1, 1, 2, 2, 4),
  num_res_blocks=2,
  attn_resolutions=(16,),
  resolution=256,
  z_channels=256,
  dropout=0.0,
)
# n_embed 1024, embed_dim 256; beta 1.0 on the commitment term, taming's 0.25 on the codebook term (loss).
QUANTIZER = dict(num_codes=1024, code_dim=256, beta=1.0, ema=False, codebook_init="uniform")


def get_config(arg: str | None = None):
  del arg  # no variants
  config = default_config()
  config.model = model_config("vqgan", **ARCHITECTURE, quantizer=quantizer_config("vq", **QUANTIZER))
  config.loss = ml_collections.ConfigDict()
  config.loss.l1 = 1.0  # rec_loss: |x - recon| averaged over pixels
  config.loss.mse = 0.0  # reported
  config.loss.codebook = 0.25  # taming's beta (legacy placement)
  config.loss.commitment = 1.0  # |sg(z_q) - z_e|^2 at quantizer beta 1.0
  config.loss.lpips = 1.0  # perceptual_weight
  config.loss.gan_hinge = 0.8  # disc_weight, times the adaptive weight
  config.adversarial.discriminator = discriminator_config("patch_gan", ndf=64, n_layers=3)
  config.adversarial.start = 250_001
  config.data = data_config(
    "tfds",
    tfds_name="imagenet2012",
    test_split="validation",
    image_size=256,
    crop="random",  # training; evaluation crops the center
    scale="symmetric",
    num_threads=16,
  )
  config.batch_size = 16
  config.eval_batch_size = 64
  config.total_steps = 500_000  # the discriminator starts at step 250,001
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = BASE_LEARNING_RATE * config.batch_size
  config.optimizer.b1, config.optimizer.b2 = 0.5, 0.9
  config.log_every = 500
  config.evals.test = evaluators.section("losses", split="test", every=10_000, max_examples=10_000)
  config.evals.codebook = evaluators.section("codebook", split="test")
  config.evals.quality = evaluators.section("image_quality", split="test")
  config.checkpoint_every = 10_000
  return config
