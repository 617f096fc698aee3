r"""VQ-VAE on CIFAR-10 in the setting of DeepMind's Sonnet example (the widely used reference run).

Batch 32, h=128, r=32, 2 residual layers, K=512 codes of D=64, beta=0.25, EMA codebook (decay 0.99),
Adam 3e-4, pixels in [-0.5, 0.5], objective mse / training variance (`nmse`) + commitment. The reference
reports NMSE about 0.056 and code perplexity about 326 (per training batch) after 10,000 steps.

    python -m experiments.main --config experiments/configs/vqvae_cifar10.py --workdir runs/vqvae_cifar10

Data: tfds `cifar10` if prepared in --config.data.data_dir; otherwise the JPEG copy
`<data root>/cifar10-jpeg/cifar10-jpeg.tar.gz` (the data root: --config.data.root, $AE_JAX_DATA, else
../shared/data; or --config.data.archive=PATH) is prepared once into a tfds dataset. Beyond the
reference: the codebook starts from k-means++ seeds of the first batch's encoder outputs, and codes
assigned fewer than 1 of the batch's 2,048 vectors per step (EMA count < 1.0; 4 is the average) are
re-seeded from the current batch's encoder outputs (as Jukebox's random restarts).
`--config.model.codebook_init=uniform --config.model.dead_code_threshold=0` is the reference exactly.
`--config.model.quantizer=fsq` swaps in finite scalar quantisation (levels 8,5,5,5).
"""

from ae_jax import evaluators
from ae_jax.config import default_config
from ae_jax.data import data_config
from ae_jax.models import model_config


def get_config():
  config = default_config()
  config.model = model_config(
    "vqvae",
    hidden=128,
    res_hidden=32,
    num_res_layers=2,
    num_codes=512,
    code_dim=64,
    beta=0.25,
    ema=True,
    decay=0.99,
    codebook_init="kmeans++",
    dead_code_threshold=1.0,
  )
  config.loss.mse = 0.0  # reported
  config.loss.nmse = 1.0  # mse / training variance, as the reference
  config.loss.codebook = 1.0  # zero with the EMA codebook; used with --config.model.ema=False
  config.loss.commitment = 1.0  # already scaled by beta
  # [-0.5, 0.5], as the reference; the JPEG archive: --config.data.archive, else <data root>/cifar10-jpeg/
  config.data = data_config("cifar10", scale="centered")
  config.batch_size = 32
  config.eval_batch_size = 1000
  config.total_steps = 10_000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-4
  config.log_every = 100
  config.evals.test.every = 1000
  config.evals.codebook = evaluators.section("codebook", split="test")  # usage over the whole test set
  config.evals.quality = evaluators.section("image_quality", split="test")  # PSNR, SSIM
  config.checkpoint_every = 1000
  return config
