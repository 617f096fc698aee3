r"""Samples a trained stage-two prior and decodes the codes through its frozen stage one.

    python -m experiments.sample --workdir runs/prior_ar --num 64 [--seed 0] [--temperature 1.0] \
        [--top_k 0] [--top_p 1.0] [--label C] [--out DIR]
    python -m experiments.sample --workdir runs/prior_maskgit --num 64 --steps 8 [--choice_temperature 4.5]

Writes OUT/samples.png (a grid of the decoded images) and OUT/samples.npz (codes [N, *grid] int32,
tokens [N, L], images [N, H, W, C] float32 in the stage one's model range, labels, and the options), OUT
defaulting to WORKDIR/samples; prints the sampling time per image. The same seed and options give the same
samples, on any number of devices. --step N / --best pick the prior's checkpoint (default: the latest).
A bad flag or workdir stops with one `error:` line.
"""

from __future__ import annotations

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "workdir", None, "The prior's run directory (trained with prior_ar.py or prior_maskgit.py)."
)
flags.DEFINE_integer("num", 64, "How many images to sample.")
flags.DEFINE_integer("seed", 0, "Sample i is drawn from fold_in(PRNGKey(seed), i).")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature (0: greedy).")
flags.DEFINE_integer("top_k", 0, "Keep the k most probable codes (0: all).")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling: the smallest set of codes with this mass (1: all).")
flags.DEFINE_integer("steps", 8, "MaskGIT: decoding iterations.")
flags.DEFINE_float("choice_temperature", 4.5, "MaskGIT: the Gumbel noise on the confidences (annealed to 0).")
flags.DEFINE_integer("label", None, "Class-conditional priors: the class of every sample.")
flags.DEFINE_string("out", None, "Output folder (default: WORKDIR/samples).")
flags.DEFINE_integer("per_device", 16, "Samples drawn at once on each device.")
flags.DEFINE_integer("step", None, "The prior's checkpoint step (default: the latest).")
flags.DEFINE_bool("best", False, "Use the prior's config.keep_best state.")
flags.DEFINE_bool(
  "quality",
  False,
  "Also score the samples against the stage one's test split (as many images as samples) in the space of "
  "a feature network ae-jax trains on that dataset (ae_jax.feature_network; cached), with the train-vs-test "
  "floor; writes OUT/quality.json.",
)
flags.DEFINE_string(
  "feature_cache", None, "The feature networks' cache folder (default: <data root>/feature_networks)."
)
flags.DEFINE_integer("feature_steps", 2000, "Training steps of the feature network (part of its cache key).")
flags.mark_flags_as_required(["workdir"])
USAGE = "python -m experiments.sample --workdir PRIOR_WORKDIR --num N [--seed S] [--temperature T] ..."


def sample(argv: list[str]) -> None:
  import math
  import os
  import time

  import numpy as np
  import tqdm

  from ae_jax import stage_one, visualize
  from ae_jax.errors import ConfigError
  from ae_jax.priors import generate

  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]} ({USAGE})")
  if FLAGS.per_device < 1:
    raise ConfigError(f"--per_device must be >= 1, got {FLAGS.per_device}")
  prior = stage_one.load_run(FLAGS.workdir, FLAGS.step, FLAGS.best)
  options = generate.SampleOptions(
    FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.steps, FLAGS.choice_temperature, FLAGS.label
  )
  generate.check_options(prior, options, FLAGS.num, steps_given=FLAGS["steps"].present)
  tokenizer = generate.tokenizer_of(prior)
  out = os.path.abspath(FLAGS.out or os.path.join(prior.workdir, "samples"))
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
  decoded = time.perf_counter()
  os.makedirs(out, exist_ok=True)
  grid = visualize.image_grid(tokenizer.to_unit(images), ncols=math.ceil(math.sqrt(len(images))))
  png = visualize.save_png(os.path.join(out, "samples.png"), grid)
  npz = os.path.join(out, "samples.npz")
  with open(npz + ".tmp", "wb") as f:
    np.savez(
      f,
      codes=codes,
      tokens=tokens,
      images=images,
      labels=np.full(len(tokens), -1 if FLAGS.label is None else FLAGS.label, np.int32),
      seed=FLAGS.seed,
      temperature=FLAGS.temperature,
      top_k=FLAGS.top_k,
      top_p=FLAGS.top_p,
      steps=FLAGS.steps,
      prior_step=prior.step,
      stage_one=np.str_(tokenizer.fingerprint),
    )
  os.replace(npz + ".tmp", npz)
  per_image = (decoded - start) / len(tokens)
  print(
    f"sampled {len(tokens)} images in {decoded - start:.2f} s: {1e3 * per_image:.2f} ms per image "
    f"({1e3 * (sampled - start) / len(tokens):.2f} ms sampling codes, "
    f"{1e3 * (decoded - sampled) / len(tokens):.2f} ms decoding; prior step {prior.step}, stage one "
    f"{tokenizer.fingerprint})"
  )
  print(f"files:       {png}, {npz}")
  if FLAGS.quality:
    _score(images, tokenizer.run.config.data, out)


def _score(images, data_config, out: str) -> None:
  """Scores `images` (the stage one's model range) against as many test images, and the floor (as many
  train images against the same test images); prints the metrics and writes OUT/quality.json."""
  import json
  import os

  from ae_jax import data, feature_network, sample_quality
  from ae_jax.evaluators.batches import stack_examples

  net = feature_network.load_or_train(data_config, FLAGS.feature_cache, steps=FLAGS.feature_steps)
  dataset = data.get_dataset(data_config)
  test, train = dataset.split("test"), dataset.split("train")
  n = min(len(images), len(test), len(train))
  reference = stack_examples(test, dataset.info, range(n))["x"]
  floor = stack_examples(train, dataset.info, range(n))["x"]
  quality = sample_quality.sample_quality(images[:n], net, reference, train_reference=floor)
  quality["feature_network"] = net.describe()
  with open(os.path.join(out, "quality.json"), "w") as f:
    json.dump(quality, f, indent=1, sort_keys=True)
  print(
    f"sample quality ({n:,} samples vs {n:,} test images, {net.describe()}): Fréchet feature distance "
    f"{quality['frechet_feature_distance']:.4g} (train-vs-test floor "
    f"{quality['floor_frechet_feature_distance']:.4g}), precision {quality['precision']:.3f}, recall "
    f"{quality['recall']:.3f}"
  )


def main(argv: list[str]) -> None:
  from ae_jax import cli, console

  console.setup()
  cli.run_or_exit(lambda: sample(argv))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parse; a bad flag exits with one `error:` line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {' '.join(str(e).split())} (usage: {USAGE})")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
