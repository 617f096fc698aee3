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

Other quantizers (ae_jax/quantizers/): an argument after the path, `vqvae_cifar10.py:quantizer=NAME`, sets the
model options below and adds the loss terms they need (or add them with flags:
`--config.loss.lfq_entropy=0.1`); further `KEY=VALUE` pairs set config.model options, and `code_entropy=W`
adds the codebook entropy penalty (vq, rvq, gumbel) with weight W. Every option can then be changed with
--config.model.* flags.

  quantizer=fsq     finite scalar quantisation, levels 8,5,5,5 (1,000 codes; --config.model.fsq_levels)
  quantizer=rvq     4 residual stages (--config.model.num_stages) of 6 codes each (4 log2 6 = 10.3 bits per
                    position, as fsq and lfq; --config.model.num_codes), each an EMA VQ, quantizer dropout
                    (--config.model.quantizer_dropout, --config.model.eval_stages=N evaluates N stages,
                    --config.model.shared_codebook=True)
  quantizer=lfq     lookup-free, code_dim=10 bits (1,024 codes); loss lfq_entropy 0.1 (diversity and
                    entropy_temperature: --config.model.diversity, --config.model.entropy_temperature)
  quantizer=gumbel  Gumbel-softmax over the 512 codes, temperature 1 -> 1/16 over the first 5,000 steps
                    (--config.model.gumbel_temperature, gumbel_temperature_min, gumbel_anneal_steps);
                    loss gumbel_kl 5e-4
  quantizer=vq      this VQ; with flags --config.model.gradient=rotation (the rotation trick),
                    --config.model.cosine=True and --config.model.codebook_dim=8 (l2-normalised,
                    low-dimensional codes), or the argument `quantizer=vq,code_entropy=0.1`
"""

from ae_jax import evaluators
from ae_jax.config import default_config, parse_arg
from ae_jax.data import data_config
from ae_jax.errors import ConfigError
from ae_jax.models import model_config

# quantizer -> (config.model options, config.loss terms it adds)
QUANTIZERS = {
  "vq": ({}, {}),
  "fsq": ({"quantizer": "fsq"}, {}),
  "rvq": ({"quantizer": "rvq", "num_stages": 4, "num_codes": 6, "quantizer_dropout": True}, {}),
  "lfq": ({"quantizer": "lfq", "code_dim": 10}, {"lfq_entropy": 0.1}),
  "gumbel": ({"quantizer": "gumbel", "gumbel_anneal_steps": 5000}, {"gumbel_kl": 5e-4}),
}
ARGS = (  # checked by the config sweep
  "quantizer=fsq",
  "quantizer=rvq",
  "quantizer=lfq",
  "quantizer=gumbel",
  "quantizer=vq,gradient=rotation",
  "quantizer=vq,cosine=true,codebook_dim=8,code_entropy=0.1",
)


def _options(config) -> dict:
  """parse_arg's defaults: the quantizer (first: `vqvae_cifar10.py:fsq` works too), the code_entropy
  weight (None: no term), then every other config.model option at its current value."""
  model = {k: v for k, v in config.model.to_dict().items() if k not in ("name", "quantizer")}
  return {"quantizer": "vq", "code_entropy": None, **model}


def _apply(config, arg: str) -> None:
  """Sets the quantizer preset, the loss terms and the model options named in `arg` (module docstring)."""
  name = parse_arg(arg, **_options(config)).quantizer
  if name not in QUANTIZERS:
    raise ConfigError(f"vqvae_cifar10.py:quantizer={name}: choose one of {list(QUANTIZERS)}")
  model, loss = QUANTIZERS[name]
  config.model.update(model)
  config.loss.update(loss)
  args = parse_arg(arg, **_options(config))  # again, on the preset: options given in `arg` win over it
  if args.code_entropy is not None:
    config.loss.code_entropy = float(args.code_entropy)
  config.model.update({k: v for k, v in args.items() if k not in ("quantizer", "code_entropy")})


def get_config(arg: str = ""):
  """The reference-setting config; `arg` (e.g. "quantizer=lfq") switches the quantizer (module docstring)."""
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
  if arg:
    _apply(config, arg)
  return config
