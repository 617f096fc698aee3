r"""An autoregressive transformer prior (stage two) over a trained VQ-VAE's codes.

    python -m experiments.main --config experiments/configs/vqvae_fashion_mnist.py --workdir runs/vqvae_fmnist
    python -m experiments.main --config experiments/configs/prior_ar.py:runs/vqvae_fmnist \
        --workdir runs/prior_ar
    python -m experiments.sample --workdir runs/prior_ar --num 64 --temperature 1.0 --top_k 0

The argument is the stage one's workdir, optionally with `,step=N` (a checkpoint step; default the
latest), `,best` (its config.keep_best state). The config pins the step and its fingerprint (a digest of
its variables), so a stage one trained further or retrained in the same workdir is refused with one error
line, never decoded or trained on in its place; the prior pins that step in the stage one's workdir
(STAGE_ONE_WORKDIR/pinned/), so the stage one's config.keep_checkpoints does not prune it while the
prior's workdir exists. `,conditional` trains a class-conditional prior (one start token per class of the
stage one's dataset; sampled with `experiments.sample --label C`, or `--label all` for the classes in
turn); with `--config.model.class_dropout=0.1` a label is replaced by a learned null class with
probability 0.1 in training, so that `experiments.sample --guidance W` can apply classifier-free guidance
(the same option for prior_maskgit.py and prior_pixelcnn.py; 0, the default, adds no parameter). The codes
dataset (`ae_jax.generation.codes`) encodes the stage one's dataset once and caches the codes under
STAGE_ONE_WORKDIR/codes/<fingerprint>/; the vocabulary K and the sequence length (Fashion-MNIST: 7x7 = 49
codes) are read from the stage one. Defaults: 4 layers of width 128, batch 64, 3,000 steps (15-30 minutes
on a 2-core CPU); `prior_likelihood` reports test bits per code beside the uniform prior's log2 K.
"""

from ae_jax import evaluators
from ae_jax.core.errors import ConfigError
from ae_jax.data import data_config
from ae_jax.generation import codes, stage_one
from ae_jax.models import MODELS, model_config
from ae_jax.runner.config import default_config, parse_arg

# Needs a trained stage one, so the shipped-config sweep (tests/test_configs.py) leaves it out;
# tests/test_stage_two.py checks it on a tiny stage one.
ARGS = ()


# The second stages' optimizer (with their own warmup_steps): AdamW with warm-up and cosine decay.
OPTIMIZER = dict(
  name="adamw", learning_rate=1e-3, schedule="warmup_cosine", weight_decay=0.01, grad_clip_norm=1.0
)

# The transformer priors' size (ar_prior, maskgit_prior).
TRANSFORMER = dict(num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512, dropout=0.1)


def pinned_stage_one(dataset: str, options: dict):
  """The data section of a second stage: dataset `dataset` ("codes", "latent_codes") of the stage one
  `options` names (parse_arg's workdir, step, best). The step (the latest one now, by default) and its
  fingerprint are pinned: the saved config names the exact stage one, and every later load checks it
  (`codes.pinned_stage_one`)."""
  step = stage_one.resolve_step(options["workdir"], options["step"], options["best"])
  fingerprint = stage_one.load_run(options["workdir"], step, options["best"]).fingerprint
  return data_config(
    dataset,
    tokenizer_workdir=options["workdir"],
    tokenizer_step=step,
    tokenizer_best=options["best"],
    tokenizer_fingerprint=fingerprint,
  )


def prior_config(model: str, arg: str, **model_options):
  """The shared config of the priors over codes: the codes of the stage one `arg` names, model `model`
  (a registered model with the "code_prior" ability) with `model_options`."""
  options = parse_arg(arg, workdir="", step=0, best=False, conditional=False)
  if not options["workdir"]:
    raise ConfigError("the config needs the stage one's workdir: --config=...prior_*.py:STAGE_ONE_WORKDIR")
  config = default_config()
  config.data = pinned_stage_one("codes", options)
  _, layout = codes.stage_one_config(config.data)
  num_classes = layout.num_classes if options["conditional"] else 0
  if options["conditional"] and not num_classes:
    raise ConfigError(
      "',conditional' needs class labels, but the stage one's dataset has none; leave out ',conditional'"
    )
  if "grid" in MODELS.lookup(model).options:  # a prior over the 2-D grid (pixelcnn_prior) reads its shape
    model_options.setdefault("grid", tuple(layout.grid))
  config.model = model_config(model, vocab_size=layout.vocab_size, **model_options)
  config.model.num_classes = num_classes
  config.loss = {MODELS.lookup(model).cls.objective: 1.0}  # the prior's own loss term
  config.batch_size = 64
  config.eval_batch_size = 1000
  config.total_steps = 3000
  config.optimizer.update({**OPTIMIZER, "warmup_steps": 200})
  config.log_every = 100
  config.checkpoint_every = 1000
  config.evals.test.every = 1000
  del config.evals["reconstructions"]  # codes are not images: experiments.sample decodes them
  config.evals.likelihood = evaluators.section("prior_likelihood", split="test")
  return config


def get_config(arg: str = ""):
  return prior_config("ar_prior", arg, **TRANSFORMER)
