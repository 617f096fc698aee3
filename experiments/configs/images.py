r"""A VQ-VAE or a conv autoencoder on your images: a folder of images or any tfds image dataset.

    python -m experiments.main --config experiments/configs/images.py:image_folder,size=32 \
        --config.data.path=/data/my_images --workdir runs/my_images
    python -m experiments.main --config experiments/configs/images.py:tfds,size=64 \
        --config.data.tfds_name=lsun/church_outdoor --workdir runs/church64

The argument is DATASET[,size=N][,model=NAME]: DATASET `image_folder` (every image under
--config.data.path; train/ and test/ subfolders or a hashed 10% test split; converted once to ArrayRecord)
or `tfds` (--config.data.tfds_name, prepared ArrayRecord in --config.data.data_dir or, online,
--config.data.download=True); size N (default 32) is the side the images are center-cropped and resized to;
NAME `vqvae` (default: vqvae_cifar10.py's model and objective, with 2, 3 or 4 stride-2 levels for sizes up
to 32, 128 and beyond, so the latent grid stays 8x8 to 16x16) or `conv_ae` (the general layout, Tanh output,
pixels in [-1, 1]). Every data and model option can be overridden, e.g. --config.data.channels=1.
"""

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.quantizers import quantizer_config
from ae_jax.runner.config import default_config, parse_arg

ARGS = ("image_folder", "tfds,size=64", "image_folder,size=64,model=conv_ae")  # checked by the config sweep


def _levels(size: int) -> int:
  return 2 if size <= 32 else 3 if size <= 128 else 4


def get_config(arg: str = "image_folder"):
  args = parse_arg(arg, dataset="image_folder", size=32, model="vqvae")
  dataset, size, model = args.dataset, args.size, args.model
  if dataset not in ("image_folder", "tfds") or model not in ("vqvae", "conv_ae"):
    raise ConfigError(f"images.py:{arg}: use image_folder|tfds[,size=N][,model=vqvae|conv_ae]")
  config = default_config()
  levels = _levels(size)
  if model == "vqvae":
    config.model = model_config(
      "vqvae",
      num_downsamples=levels,
      quantizer=quantizer_config("vq", codebook_init="kmeans++", dead_code_threshold=1.0),
    )
    config.loss.mse = 0.0  # reported
    config.loss.nmse = 1.0  # mse / training variance (estimated on the first training images)
    config.loss.commitment = 1.0
    scale, config.batch_size, config.optimizer.learning_rate = "centered", 32, 3e-4
    config.evals.codebook = evaluators.section("codebook", split="test")
  else:
    config.model = model_config(
      "conv_ae", num_downsamples=levels + 1, channels=(32, 64, 128, 256, 256)[: levels + 1]
    )
    config.model.dense, config.model.code_dim = (256,), 64
    config.loss.mse = 1.0
    scale, config.batch_size, config.optimizer.learning_rate = "symmetric", 64, 1e-3
  config.data = data_config(dataset, image_size=size, scale=scale)
  config.total_steps = 10_000
  config.log_every = 100
  config.evals.test.every = 1000
  config.evals.quality = evaluators.section("image_quality", split="test")
  config.checkpoint_every = 1000
  config.eval_batch_size = 500
  return config
