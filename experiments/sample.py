r"""Samples a trained stage-two prior and decodes the codes through its frozen stage one; or samples the
continuous codes of an autoencoder or VAE run (`--prior`) and decodes them through its decoder.

    python -m experiments.sample --workdir runs/prior_ar --num 64 [--seed 0] [--temperature 1.0] \
        [--top_k 0] [--top_p 1.0] [--label C|all] [--out DIR]
    python -m experiments.sample --workdir runs/prior_maskgit --num 64 --steps 8 [--choice_temperature 4.5]
    python -m experiments.sample --workdir runs/prior_ar_conditional --num 100 --label all --guidance 3

Writes OUT/samples.png (a grid of the first 256 decoded images) and OUT/samples.npz (codes [N, *grid] int32,
tokens [N, L], images [N, H, W, C] float32 in the stage one's model range, labels, and the options), OUT
defaulting to WORKDIR/samples; prints the sampling time per image. The same seed and options give the same
samples, on any number of devices. --step N / --best pick the prior's checkpoint (default: the latest).
A bad flag or workdir stops with one `error:` line, and so does an --out that is a file (before sampling)
or a stage one other than the one the prior was trained on (`codes.pinned_stage_one`).

The two files are written as one unit (`samplers.write_samples`): temporary files first, then renamed under a
lock on OUT (the earlier samples.png removed first), so two samplers writing to one --out leave the files of
one of them, a kill leaves no files of two runs side by side (at worst the .npz without its PNG), and a full
disk stops with one line saying what OUT keeps. samples.npz, samples.png (a PNG text chunk) and quality.json
carry the same `sample_id`.

    python -m experiments.sample --workdir runs/conv_ae --prior mixture [--components 10] [--covariance full]
    python -m experiments.sample --workdir runs/vae_mlp --prior normal

Any autoencoder (mlp_ae, conv_ae, tied_ae) or VAE run: `--prior=mixture` fits a Gaussian mixture on its
training codes (Ghosh et al. 2020; cached in WORKDIR/latent_priors/), `--prior=normal` draws a VAE's prior
N(0, I) (`ae_jax.generation.latent`). A sequence VAE with a latent per frame (seq_vae_conv) draws each frame's
code independently from either and decodes spectrograms [N, T, F], shown as pictures in samples.png.
`--quality` scores image samples against the test split in a feature network's space
(`ae_jax.metrics.sample_quality`), with the train-vs-test floor, into OUT/quality.json, and, when the FID
Inception weights are here (`--inception_weights PATH`, else $AE_JAX_INCEPTION, else the caches or a
download), in Inception space too: FID with its floor, Inception Score and precision/recall
(`ae_jax.evaluators.inception_features`), printed side by side with the feature network's numbers and
written under "inception" in quality.json. Weights named by the flag or the variable that do not load stop
the command with one `error:` line before sampling; weights found nowhere leave a note saying where to
put the file, and the feature network's numbers.

    python -m experiments.sample --workdir runs/prior_diffusion_conv_ae --steps 32

A diffusion prior over an autoencoder's or VAE's codes (prior_diffusion.py) is a run of its own, sampled
through its workdir like the priors over tokens; it reads --steps (ODE steps) only, and `--prior=diffusion`
on the autoencoder's workdir is one error line naming the priors trained on it.
"""

from __future__ import annotations

import math

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
flags.DEFINE_integer(
  "steps", 8, "MaskGIT: decoding iterations; a diffusion prior: ODE (Heun) steps.", flag_values=FLAGS
)
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
flags.DEFINE_float(
  "guidance",
  1.0,
  "Classifier-free guidance W of a class-conditional prior trained with config.model.class_dropout > 0: "
  "the logits uncond + W (cond - uncond) before temperature and filters (1: none, 0: the null class).",
  flag_values=FLAGS,
)
flags.DEFINE_enum(
  "guidance_schedule",
  "constant",
  ["constant", "linear"],
  "How --guidance varies over the sampling order of an autoregressive prior: constant W, or linear from 1 "
  "at the first position to W at the last (MUSE's and VAR's schedule).",
  flag_values=FLAGS,
)
flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/samples).", flag_values=FLAGS)
flags.DEFINE_integer("per_device", 16, "Samples drawn at once on each device.", flag_values=FLAGS)
flags.DEFINE_enum(
  "prior",
  None,
  ["mixture", "normal", "diffusion"],
  "For an autoencoder or VAE run (not a prior run): sample its codes from a Gaussian mixture fitted on its "
  "training codes (mixture) or from a VAE's prior N(0, I) (normal), and decode them. A diffusion prior is a "
  "run of its own (prior_diffusion.py): sample its workdir (--prior=diffusion is accepted there).",
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
  "a feature network ae-jax trains on that dataset (ae_jax.metrics.feature_network; cached), with the "
  "train-vs-test floor; writes OUT/quality.json.",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "feature_cache",
  None,
  "The feature networks' cache folder (default: $XDG_CACHE_HOME/ae_jax/feature_networks, else "
  "~/.cache/ae_jax/feature_networks).",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "feature_steps",
  None,
  "Training steps of the feature network (part of its cache key; default: the dataset's shipped network, "
  "experiments/configs/feature_network.py).",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "inception_weights",
  None,
  "--quality: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or its folder) for the Inception space "
  "(default: $AE_JAX_INCEPTION, the caches, or a download).",
  flag_values=FLAGS,
)
flags.mark_flags_as_required(["workdir"], flag_values=FLAGS)
# the flags of generate.SampleOptions' fields, which only runs of a prior over codes take
SAMPLING_FLAGS = (
  "temperature",
  "top_k",
  "top_p",
  "steps",
  "choice_temperature",
  "label",
  "guidance",
  "guidance_schedule",
)
GRID_IMAGES = 256  # at most this many samples in samples.png
USAGE = (
  "python -m experiments.sample --workdir PRIOR_WORKDIR --num N [--seed S] [--temperature T] ..., or "
  "--workdir AE_WORKDIR --prior mixture|normal"
)


def grid_layout(num: int, classes: int = 0) -> tuple[int, int]:
  """(how many of `num` samples samples.png shows, its columns): at most GRID_IMAGES in a square grid, or
  with `classes` K > 0 (--label all: sample i is of class i mod K) K columns, one class each, whole rows."""
  if classes:
    return min(num, max(GRID_IMAGES // classes, 1) * classes), classes
  shown = min(num, GRID_IMAGES)
  return shown, math.ceil(math.sqrt(shown))


def sample(argv: list[str]) -> None:
  """The command: draws FLAGS.num samples and writes them to --out (module docstring)."""
  import os
  import time

  import tqdm

  from ae_jax.core import visualize, workdir
  from ae_jax.core.errors import ConfigError
  from ae_jax.generation import diffusion_sampler, generate, samplers, stage_one

  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]} ({USAGE})")
  if FLAGS.per_device < 1:
    raise ConfigError(f"--per_device must be >= 1, got {FLAGS.per_device}")
  run = stage_one.load_run(FLAGS.workdir, FLAGS.step, FLAGS.best)
  # before sampling: an --out that is a file, or a folder that cannot be written, is refused
  out = workdir.prepare(FLAGS.out or os.path.join(run.workdir, "samples"), flag="--out")
  options = generate.SampleOptions(
    FLAGS.temperature,
    FLAGS.top_k,
    FLAGS.top_p,
    FLAGS.steps,
    FLAGS.choice_temperature,
    FLAGS.label,
    FLAGS.guidance,
    FLAGS.guidance_schedule,
  )
  if samplers.is_prior_run(run.config):
    diffusion = diffusion_sampler.is_diffusion_run(run.config)
    if FLAGS.prior is not None and not (diffusion and FLAGS.prior == "diffusion"):
      raise ConfigError(
        f"--prior is for autoencoder and VAE runs; {run.workdir} is a prior run: drop --prior"
      )
    given = [name for name in SAMPLING_FLAGS if FLAGS[name].present]
    if diffusion:
      diffusion_sampler.check_options(run, FLAGS.steps, FLAGS.num, given=given)
    else:
      generate.check_options(run, options, FLAGS.num, given=given)
  else:
    if FLAGS.prior == "diffusion":
      samplers.check_latent_prior(run.config, FLAGS.prior, workdir=run.workdir)
    for name in SAMPLING_FLAGS:
      if FLAGS[name].present and FLAGS.prior is not None:
        raise ConfigError(f"--{name} is for runs of a prior over codes, not --prior={FLAGS.prior}")
  why_not = samplers.quality_unavailable(run.config.data) if FLAGS.quality else None
  if why_not:
    raise ConfigError(f"--quality: dataset '{run.config.data.name}': {why_not}; drop --quality")
  if FLAGS.inception_weights is not None and not FLAGS.quality:
    raise ConfigError("--inception_weights is for --quality's Inception space: add --quality")
  if FLAGS.quality:  # before sampling: weights asked for that do not load are one error
    from ae_jax.evaluators import inception_features

    inception_variables, inception_note = inception_features.weights_for_quality(
      FLAGS.inception_weights, FLAGS.num
    )
  start = time.perf_counter()
  with tqdm.tqdm(
    total=FLAGS.num, unit="image", desc="sampling", disable=not samplers.is_prior_run(run.config)
  ) as bar:
    drawn = samplers.draw(
      run,
      FLAGS.num,
      seed=FLAGS.seed,
      options=options,
      per_device=FLAGS.per_device,
      latent_prior=FLAGS.prior,
      components=FLAGS.components,
      covariance=FLAGS.covariance,
      progress=lambda n: bar.update(n - bar.n),
    )
  decoded = time.perf_counter()
  classes = getattr(run.model, "num_classes", 0) if FLAGS.label == "all" else 0
  count, ncols = grid_layout(len(drawn.images), classes)
  shown = drawn.images[:count]  # the first ones; the .npz holds all
  grid = visualize.image_grid(drawn.pictures(shown), ncols=ncols)
  files = samplers.write_samples(out, dict(images=drawn.images, seed=FLAGS.seed, **drawn.arrays), grid)
  num = len(drawn.images)
  print(
    f"sampled {num} images in {decoded - start:.2f} s: {1e3 * (decoded - start) / num:.2f} ms per image "
    f"({drawn.what})"
  )
  print(
    f"files:       {files.png}, {files.npz}" + (" (samples.png: column c holds class c)" if classes else "")
  )
  if FLAGS.quality:
    quality = samplers.score(drawn, feature_steps=FLAGS.feature_steps, feature_cache=FLAGS.feature_cache)
    inception = (
      None if inception_variables is None else inception_features.score_drawn(drawn, inception_variables)
    )
    samplers.write_quality(out, {**quality, "inception": inception}, files.sample_id)
    n = int(quality["num_samples"])
    print(f"sample quality ({n:,} samples vs {n:,} test images): " + samplers.describe(quality))
    print(
      "\n".join(inception_features.report_lines(inception, quality))
      + (f"\n{inception_note}" if inception_note else "")
    )


def main(argv: list[str]) -> None:
  """The command's entry point: `sample` with a bad input stopping at one `error:` line."""
  # JAX first: imported after console.setup() (which sets the "jax" logger to INFO), JAX takes that level
  # as its own default and prints its INFO lines (C++ included) on the console
  import jax  # noqa: F401

  from ae_jax.core import cli, console

  console.setup()
  cli.run_or_exit(lambda: sample(argv))


if __name__ == "__main__":
  from ae_jax.runner.command_line import own_flags_parser

  app.run(main, flags_parser=own_flags_parser(FLAGS, USAGE))
