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
`--config.model.quantizer.codebook_init=uniform --config.model.quantizer.dead_code_threshold=0` is the
reference exactly.

Other quantizers (ae_jax/quantizers/): an argument after the path, `vqvae_cifar10.py:quantizer=NAME`, sets
the quantizer section config.model.quantizer (only that quantizer's options: `python -m ae_jax.core.registry`
lists them) as below and adds the loss terms it needs (or add them with flags:
`--config.loss.lfq_entropy=0.1`); further `KEY=VALUE` pairs set options of the quantizer or of
config.model, and `code_entropy=W` adds the codebook entropy penalty (vq, rvq, gumbel) with weight W.
Every option can then be changed with --config.model.quantizer.* (and --config.model.*) flags.

  quantizer=fsq     finite scalar quantisation, levels 8,5,5,5 (1,000 codes; --config.model.quantizer.levels)
  quantizer=rvq     4 residual stages (num_stages) of 6 codes each (4 log2 6 = 10.3 bits per position, as
                    fsq and lfq; num_codes), each an EMA VQ seeded as this VQ, quantizer dropout
                    (quantizer_dropout; eval_stages=N evaluates N stages; shared_codebook=True)
  quantizer=lfq     lookup-free, code_dim=10 bits (1,024 codes); loss lfq_entropy 0.1 (options diversity,
                    entropy_temperature)
  quantizer=gumbel  Gumbel-softmax over the 512 codes, temperature 1 -> 1/16 over the first 5,000 steps
                    (options temperature, temperature_min, anneal_steps); loss gumbel_kl 5e-4
  quantizer=vq      this VQ; with gradient=rotation (the rotation trick), cosine=True and codebook_dim=8
                    (l2-normalised, low-dimensional codes), or the argument `quantizer=vq,code_entropy=0.1`
"""

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError
from ae_jax.data import data_config
from ae_jax.models import model_config
from ae_jax.quantizers import quantizer_config
from ae_jax.runner.config import default_config, parse_arg

# The reference VQ (Sonnet's, with k-means++ seeding and dead-code re-seeding).
VQ = dict(num_codes=512, code_dim=64, beta=0.25, ema=True, decay=0.99, codebook_init="kmeans++")
VQ["dead_code_threshold"] = 1.0
# quantizer -> (config.model.quantizer options, config.loss terms it adds)
QUANTIZERS = {
  "vq": (VQ, {}),
  "fsq": ({}, {}),
  "rvq": ({**VQ, "num_stages": 4, "num_codes": 6, "quantizer_dropout": True}, {}),
  "lfq": ({"code_dim": 10, "beta": 0.25}, {"lfq_entropy": 0.1}),
  "gumbel": ({"num_codes": 512, "code_dim": 64, "anneal_steps": 5000}, {"gumbel_kl": 5e-4}),
}
ARGS = (  # checked by the config sweep
  "quantizer=fsq",
  "quantizer=rvq",
  "quantizer=lfq",
  "quantizer=gumbel",
  "quantizer=vq,gradient=rotation",
  "quantizer=vq,cosine=true,codebook_dim=8,code_entropy=0.1",
)


def _options(config, name: str) -> dict:
  """parse_arg's defaults: the quantizer (first: `vqvae_cifar10.py:fsq` works too), the code_entropy
  weight (None: no term), then the options of quantizer `name` and of config.model at their current
  values."""
  section = {k: v for k, v in quantizer_config(name, **QUANTIZERS[name][0]).items() if k != "name"}
  model = {k: v for k, v in config.model.to_dict().items() if k not in ("name", "quantizer")}
  return {"quantizer": "vq", "code_entropy": None, **section, **model}


def _quantizer_name(arg: str) -> str:
  """The quantizer `arg` names (`quantizer=NAME`, or a leading bare NAME); vq by default."""
  items = [item for item in arg.split(",") if item]
  for position, item in enumerate(items):
    key, eq, value = item.partition("=")
    if key.strip() == "quantizer" and eq:
      name = value.strip()
      break
    if position == 0 and not eq:
      name = key.strip()
      break
  else:
    name = "vq"
  if name not in QUANTIZERS:
    raise ConfigError(f"vqvae_cifar10.py:quantizer={name}: choose one of {list(QUANTIZERS)}")
  return name


def _apply(config, arg: str) -> None:
  """Sets the quantizer preset, the loss terms and the options named in `arg` (module docstring): options
  of the quantizer go to config.model.quantizer, the others to config.model; given ones win over the
  preset."""
  name = _quantizer_name(arg)
  quantizer, loss = QUANTIZERS[name]
  config.model.quantizer = quantizer_config(name, **quantizer)
  config.loss.update(loss)
  args = parse_arg(arg, **_options(config, name))
  if args.code_entropy is not None:
    config.loss.code_entropy = float(args.code_entropy)
  for key, value in args.items():
    if key in ("quantizer", "code_entropy"):
      continue
    section = config.model.quantizer if key in config.model.quantizer else config.model
    section[key] = value


def get_config(arg: str = ""):
  """The reference-setting config; `arg` (e.g. "quantizer=lfq") switches the quantizer (module docstring)."""
  config = default_config()
  config.model = model_config(
    "vqvae",
    hidden=128,
    res_hidden=32,
    num_res_layers=2,
    quantizer=quantizer_config("vq", **VQ),
  )
  config.loss.mse = 0.0  # reported
  config.loss.nmse = 1.0  # mse / training variance, as the reference
  config.loss.codebook = 1.0  # zero with the EMA codebook; used with --config.model.quantizer.ema=False
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
