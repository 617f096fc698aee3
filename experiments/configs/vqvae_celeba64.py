r"""VQ-VAE on CelebA at 64x64 (tfds `celeb_a`): 8x8 latent grid (three stride-2 levels), K=512 codes of D=64.

    python -m experiments.main --config experiments/configs/vqvae_celeba64.py --workdir runs/vqvae_celeba64
    python -m ae_jax.runner.bottleneck --config experiments/configs/vqvae_celeba64.py  # 8x8, 576 bits

Data: tfds `celeb_a` prepared as ArrayRecord in --config.data.data_dir (or, online, add
--config.data.download=True with `pip install 'ae-jax[tfds-download]'`); the 178x218 aligned faces are
center-cropped to 148x148 (the usual CelebA-64 crop) and resized to 64x64 as they are read, so the 162,770
training images are never held in memory. Pixels in [-0.5, 0.5], objective NMSE (the training variance is
estimated on the first 5,000 training images) + commitment, EMA codebook with k-means++ seeds and dead-code
re-seeding, Adam 3e-4, batch 64; the validation split is evaluated during training, the test split at the end.
"""

from ae_jax import evaluators
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.quantizers import quantizer_config
from ae_jax.runner.config import default_config


def get_config():
  config = default_config()
  config.model = model_config(
    "vqvae",
    hidden=128,
    res_hidden=32,
    num_res_layers=2,
    num_downsamples=3,  # 64 -> 8: channels 32, 64, 128
    quantizer=quantizer_config(
      "vq",
      num_codes=512,
      code_dim=64,
      beta=0.25,
      ema=True,
      decay=0.99,
      codebook_init="kmeans++",
      dead_code_threshold=1.0,
    ),
  )
  config.loss.mse = 0.0  # reported
  config.loss.nmse = 1.0
  config.loss.commitment = 1.0
  config.data = data_config(
    "tfds",
    tfds_name="celeb_a",
    validation_split="validation",
    label_key="",  # celeb_a has attributes, no class label
    image_size=64,
    crop_size=148,
    scale="centered",
    num_threads=4,  # decoding and resizing happen as records are read
  )
  config.batch_size = 64
  config.eval_batch_size = 500
  config.total_steps = 30_000
  config.optimizer.learning_rate = 3e-4
  config.log_every = 100
  config.evals.validation = evaluators.section("losses", split="validation", every=2000)
  config.evals.test.every = 0  # reported after training only
  config.evals.codebook = evaluators.section("codebook", split="test")
  config.evals.quality = evaluators.section("image_quality", split="test")
  config.checkpoint_every = 2000
  return config
