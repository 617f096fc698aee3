r"""Samples a trained stage-two prior and decodes the codes through its frozen stage one; or samples the
continuous codes of an autoencoder or VAE run (`--prior`) and decodes them through its decoder.

    python -m experiments.sample --workdir runs/prior_ar --num 64 [--seed 0] [--temperature 1.0] \
        [--top_k 0] [--top_p 1.0] [--label C|all] [--out DIR]
    python -m experiments.sample --workdir runs/prior_maskgit --num 64 --steps 8 [--choice_temperature 4.5]

Writes OUT/samples.png (a grid of the first 256 decoded images) and OUT/samples.npz (codes [N, *grid] int32,
tokens [N, L], images [N, H, W, C] float32 in the stage one's model range, labels, and the options), OUT
defaulting to WORKDIR/samples; prints the sampling time per image. The same seed and options give the same
samples, on any number of devices. --step N / --best pick the prior's checkpoint (default: the latest).
A bad flag or workdir stops with one `error:` line.

    python -m experiments.sample --workdir runs/conv_ae --prior mixture [--components 10] [--covariance full]
    python -m experiments.sample --workdir runs/vae_mlp --prior normal

Any autoencoder (mlp_ae, conv_ae, tied_ae) or VAE run: `--prior=mixture` fits a Gaussian mixture on its
training codes (Ghosh et al. 2020; cached in WORKDIR/latent_priors/), `--prior=normal` draws a VAE's prior
N(0, I) (`ae_jax.priors.latent`). `--quality` scores the samples against the test split in a feature
network's space (`ae_jax.sample_quality`), with the train-vs-test floor, into OUT/quality.json.
"""

from __future__ import annotations

from absl import app, flags

# Its own flag set, so this command and the others can be imported into one process (tests).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "workdir",
  None,
  "The prior's run directory (trained with prior_ar.py or prior_maskgit.py).",
  flag_values=FLAGS,
)
flags.DEFINE_integer("num", 64, "How many images to sample.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Sample i is drawn from fold_in(PRNGKey(seed), i).", flag_values=FLAGS)
flags.DEFINE_float("temperature", 1.0, "Softmax temperature (0: greedy).", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 0, "Keep the k most probable codes (0: all).", flag_values=FLAGS)
flags.DEFINE_float(
  "top_p", 1.0, "Nucleus sampling: the smallest set of codes with this mass (1: all).", flag_values=FLAGS
)
flags.DEFINE_integer("steps", 8, "MaskGIT: decoding iterations.", flag_values=FLAGS)
flags.DEFINE_float(
  "choice_temperature",
  4.5,
  "MaskGIT: the Gumbel noise on the confidences (annealed to 0).",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "label",
  None,
  "Class-conditional priors: the class of every sample, or 'all' for the classes in turn (i % classes).",
  flag_values=FLAGS,
)
flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/samples).", flag_values=FLAGS)
flags.DEFINE_integer("per_device", 16, "Samples drawn at once on each device.", flag_values=FLAGS)
flags.DEFINE_enum(
  "prior",
  None,
  ["mixture", "normal"],
  "For an autoencoder or VAE run (not a prior run): sample its codes from a Gaussian mixture fitted on its "
  "training codes (mixture) or from a VAE's prior N(0, I) (normal), and decode them.",
  flag_values=FLAGS,
)
flags.DEFINE_integer("components", 10, "--prior=mixture: mixture components.", flag_values=FLAGS)
flags.DEFINE_enum(
  "covariance", "full", ["full", "diag"], "--prior=mixture: covariance of each component.", flag_values=FLAGS
)
flags.DEFINE_integer("step", None, "The prior's checkpoint step (default: the latest).", flag_values=FLAGS)
flags.DEFINE_bool("best", False, "Use the prior's config.keep_best state.", flag_values=FLAGS)
flags.DEFINE_bool(
  "quality",
  False,
  "Also score the samples against the stage one's test split (as many images as samples) in the space of "
  "a feature network ae-jax trains on that dataset (ae_jax.feature_network; cached), with the train-vs-test "
  "floor; writes OUT/quality.json.",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "feature_cache",
  None,
  "The feature networks' cache folder (default: <data root>/feature_networks).",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "feature_steps", 2000, "Training steps of the feature network (part of its cache key).", flag_values=FLAGS
)
flags.mark_flags_as_required(["workdir"], flag_values=FLAGS)
GRID_IMAGES = 256  # at most this many samples in samples.png
USAGE = (
  "python -m experiments.sample --workdir PRIOR_WORKDIR --num N [--seed S] [--temperature T] ..., or "
  "--workdir AE_WORKDIR --prior mixture|normal"
)


def sample(argv: list[str]) -> None:
  import math
  import os
  import time

  import numpy as np

  from ae_jax import stage_one, visualize
  from ae_jax.errors import ConfigError

  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]} ({USAGE})")
  if FLAGS.per_device < 1:
    raise ConfigError(f"--per_device must be >= 1, got {FLAGS.per_device}")
  run = stage_one.load_run(FLAGS.workdir, FLAGS.step, FLAGS.best)
  out = os.path.abspath(FLAGS.out or os.path.join(run.workdir, "samples"))
  start = time.perf_counter()
  if run.config.data.get("name") == "codes":
    if FLAGS.prior is not None:
      raise ConfigError(
        f"--prior is for autoencoder and VAE runs; {run.workdir} is a prior run: drop --prior"
      )
    images, arrays, display, what = _sample_prior_run(run)
  else:
    images, arrays, display, what = _sample_latents(run)
  decoded = time.perf_counter()
  os.makedirs(out, exist_ok=True)
  shown = images[:GRID_IMAGES]  # the grid shows the first ones; the .npz holds all
  grid = visualize.image_grid(display(shown), ncols=math.ceil(math.sqrt(len(shown))))
  png = visualize.save_png(os.path.join(out, "samples.png"), grid)
  npz = os.path.join(out, "samples.npz")
  with open(npz + ".tmp", "wb") as f:
    np.savez(f, images=images, seed=FLAGS.seed, **arrays)
  os.replace(npz + ".tmp", npz)
  print(
    f"sampled {len(images)} images in {decoded - start:.2f} s: "
    f"{1e3 * (decoded - start) / len(images):.2f} ms per image ({what})"
  )
  print(f"files:       {png}, {npz}")
  if FLAGS.quality:
    labels = arrays.get("labels")
    _score(
      images, _image_run(run).config.data, out, labels if labels is not None and labels.min() >= 0 else None
    )


def _sample_prior_run(prior):
  """Codes from a stage-two prior run, decoded by its frozen stage one."""
  import time

  import numpy as np
  import tqdm

  from ae_jax.priors import generate

  options = generate.SampleOptions(
    FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.steps, FLAGS.choice_temperature, FLAGS.label
  )
  generate.check_options(prior, options, FLAGS.num, steps_given=FLAGS["steps"].present)
  tokenizer = generate.tokenizer_of(prior)
  start = time.perf_counter()
  with tqdm.tqdm(total=FLAGS.num, unit="image", desc="sampling codes") as bar:
    tokens = generate.sample_tokens(
      prior,
      FLAGS.num,
      seed=FLAGS.seed,
      options=options,
      per_device=FLAGS.per_device,
      progress=lambda n: bar.update(n - bar.n),
    )
  sampled = time.perf_counter()
  codes = tokens.reshape(len(tokens), *tokenizer.layout.grid)
  images = tokenizer.decode_codes(codes)
  arrays = dict(
    codes=codes,
    tokens=tokens,
    labels=options.labels(np.arange(len(tokens)), prior.model.num_classes),
    temperature=FLAGS.temperature,
    top_k=FLAGS.top_k,
    top_p=FLAGS.top_p,
    steps=FLAGS.steps,
    prior_step=prior.step,
    stage_one=np.str_(tokenizer.fingerprint),
  )
  what = (
    f"{1e3 * (sampled - start) / len(tokens):.2f} ms sampling codes, then decoding; prior step {prior.step}, "
    f"stage one {tokenizer.fingerprint}"
  )
  return images, arrays, tokenizer.to_unit, what


def _sample_latents(run):
  """Codes of an autoencoder or VAE run from --prior (a mixture fitted on its training codes, or N(0, I)),
  decoded by the run's decoder."""
  import numpy as np

  from ae_jax import stage_one
  from ae_jax.errors import ConfigError
  from ae_jax.priors import latent

  codec = latent.LatentCodec.of(run)
  if FLAGS.prior is None:
    raise ConfigError(
      f"{run.workdir} is a '{run.config.model.name}' run: choose how its codes are drawn with "
      "--prior=mixture (a Gaussian mixture fitted on its training codes)"
      + (" or --prior=normal (its prior N(0, I))" if codec.vae else "")
    )
  for name in ("temperature", "top_k", "top_p", "steps", "label"):
    if FLAGS[name].present:
      raise ConfigError(f"--{name} is for prior runs (ar_prior, maskgit_prior), not --prior={FLAGS.prior}")
  if FLAGS.num < 1:
    raise ConfigError(f"--num must be >= 1, got {FLAGS.num}")
  if FLAGS.prior == "normal":
    codes = latent.standard_normal(codec, FLAGS.num, FLAGS.seed)
    what = "N(0, I)"
  else:
    mixture = latent.fit_mixture(codec, FLAGS.components, covariance=FLAGS.covariance, seed=FLAGS.seed)
    codes = mixture.sample(np.random.default_rng(FLAGS.seed), FLAGS.num).astype(np.float32)
    what = f"a {FLAGS.components}-component {FLAGS.covariance} Gaussian mixture over the training codes"
  images = codec.decode(codes)
  arrays = dict(codes=codes, prior=np.str_(FLAGS.prior), run_step=run.step, run=np.str_(run.fingerprint))
  return images, arrays, lambda x: stage_one.to_unit(run.config, x), f"codes from {what}"


def _image_run(run):
  """The run whose dataset the samples imitate: a prior run's stage one, else the run itself."""
  from ae_jax.priors import generate

  return generate.tokenizer_of(run).run if run.config.data.get("name") == "codes" else run


def _score(images, data_config, out: str, labels=None) -> None:
  """Scores `images` (the stage one's model range) against as many test images, and the floor (as many
  train images against the same test images); with `labels` (the classes of class-conditional samples),
  also the feature network's accuracy on them. Prints the metrics and writes OUT/quality.json."""
  import json
  import os

  from ae_jax import data, feature_network, sample_quality
  from ae_jax.evaluators.batches import stack_examples

  settings = feature_network.Settings(steps=FLAGS.feature_steps)
  net = feature_network.load_or_train(data_config, FLAGS.feature_cache, settings)
  dataset = data.get_dataset(data_config)
  test, train = dataset.split("test"), dataset.split("train")
  n = min(len(images), len(test), len(train))
  reference = stack_examples(test, dataset.info, range(n))["x"]
  floor = stack_examples(train, dataset.info, range(n))["x"]
  quality = sample_quality.sample_quality(
    images[:n], net, reference, train_reference=floor, labels=None if labels is None else labels[:n]
  )
  quality["feature_network"] = net.describe()
  with open(os.path.join(out, "quality.json"), "w") as f:
    json.dump(quality, f, indent=1, sort_keys=True)
  print(
    f"sample quality ({n:,} samples vs {n:,} test images, {net.describe()}): Fréchet feature distance "
    f"{quality['frechet_feature_distance']:.4g} (train-vs-test floor "
    f"{quality['floor_frechet_feature_distance']:.4g}), precision {quality['precision']:.3f}, recall "
    f"{quality['recall']:.3f}"
    + (f", class accuracy {quality['class_accuracy']:.3f}" if "class_accuracy" in quality else "")
  )


def main(argv: list[str]) -> None:
  from ae_jax import cli, console

  console.setup()
  cli.run_or_exit(lambda: sample(argv))


if __name__ == "__main__":
  from ae_jax.config import own_flags_parser

  app.run(main, flags_parser=own_flags_parser(FLAGS, USAGE))
