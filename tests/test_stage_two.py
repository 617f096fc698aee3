"""Stage two: a prior over a frozen VQ-VAE's codes. A tiny VQ-VAE on synthetic 8x8 images trained a few
steps by the loop is the stage one; its codes feed tiny AR and MaskGIT priors trained by the same loop,
which are sampled and decoded back to images."""

import dataclasses
import errno
import importlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import data, evaluators
from ae_jax.core import parallel, workdir
from ae_jax.core.errors import AEJaxError, ConfigError, DataError, DataNotFoundError, WorkdirError
from ae_jax.generation import codes, generate, samplers, stage_one
from ae_jax.models import get_model, model_config
from ae_jax.quantizers import quantizer_config
from ae_jax.runner import loop
from ae_jax.training import train
from ae_jax.training.checkpoint import CheckpointMismatchError
from tests.conftest import TINY_VQVAE, make_tiny_config, train_tiny_vqvae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VQ = TINY_VQVAE
TINY_PRIOR = dict(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32, dropout=0.0)


@pytest.fixture(scope="module")
def stage_one_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("stage_one"))
  train_tiny_vqvae(path, 4)
  return path


def _prior_config(name: str, stage_one_dir: str, steps: int):
  module = importlib.import_module(f"experiments.configs.{'prior_ar' if name == 'ar' else 'prior_maskgit'}")
  config = module.get_config(stage_one_dir)
  config.model.update(TINY_PRIOR)
  config.batch_size = config.eval_batch_size = 16
  config.total_steps, config.log_every, config.checkpoint_every = steps, 5, steps
  config.optimizer.warmup_steps, config.optimizer.learning_rate = 2, 3e-3
  config.evals.test.every = 0
  return config


def _variables_bytes(workdir: str) -> dict:
  run = stage_one.load_run(workdir)
  return {
    jax.tree_util.keystr(p): np.asarray(v).tobytes()
    for p, v in jax.tree_util.tree_leaves_with_path(run.variables)
  }


@pytest.fixture(scope="module")
def ar_prior(stage_one_dir, tmp_path_factory):
  before = _variables_bytes(stage_one_dir)
  path = str(tmp_path_factory.mktemp("prior_ar"))
  summary = loop.train_and_evaluate(_prior_config("ar", stage_one_dir, 30), path)
  return path, summary, before


# ----------------------------------------------------------------------------- stage one: codes and back


@pytest.mark.parametrize(
  "options",
  [
    dict(name="vq", num_codes=16, code_dim=4),
    dict(name="vq", num_codes=16, code_dim=4, ema=False, cosine=True, codebook_dim=3),
    dict(name="rvq", num_codes=16, code_dim=4, num_stages=3, eval_stages=2),
    dict(name="fsq", levels=(5, 4)),
    dict(name="lfq", code_dim=4),
    dict(name="gumbel", num_codes=16, code_dim=4),
  ],
)
def test_code_vectors_of_the_indices_are_the_quantized_latents(options):
  """code_vectors(indices of x) is the quantizer's own output and decodes to the model's recon of x."""
  kw = {**VQ, "quantizer": dict(quantizer_config(**options))}
  model = get_model("vqvae", input_shape=(8, 8, 3), axis_name=parallel.AXIS, **kw)
  x = jax.device_put(np.random.default_rng(0).uniform(-0.5, 0.5, (4, 8, 8, 3)).astype(np.float32))
  init = parallel.with_named_axis(lambda r, x: model.init(r, x, train=False))
  variables = train.run_once(init, {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, x)
  out = jax.jit(parallel.with_named_axis(lambda v, x: model.apply(v, x)))(variables, x)
  z = jax.jit(lambda v, i: stage_one.code_vectors(model, v, i))(variables, out["indices"])
  recon = jax.jit(parallel.with_named_axis(lambda v, z: model.apply(v, z, method="decode")))(variables, z)
  np.testing.assert_allclose(z, out["code"], rtol=0, atol=1e-6)
  np.testing.assert_allclose(recon, out["recon"], rtol=0, atol=1e-6)
  assert int(jnp.max(out["indices"])) < model.codebooks()[0]


@pytest.mark.training
def test_decode_of_encoded_codes_is_the_reconstruction(stage_one_dir):
  """encode_codes / decode_codes (pmapped over 8 devices, a padded last batch) give the trained model's
  own indices and reconstruction; the fingerprint names the step and the content."""
  tok = stage_one.load_stage_one(stage_one_dir)
  assert tok.run.step == 4 and tok.fingerprint.startswith("4-") and tok.layout.grid == (2, 2)
  assert tok.layout.vocab_size == 16 and tok.layout.num_classes == 10
  x = np.random.default_rng(1).uniform(-1, 1, (21, 8, 8, 1)).astype(np.float32)
  indices = tok.encode_codes(x, batch_size=16)
  images = tok.decode_codes(indices, batch_size=16)
  model, variables = tok.run.model, tok.run.variables
  out = jax.jit(parallel.with_named_axis(lambda v, x: model.apply(v, x)))(variables, x)
  np.testing.assert_array_equal(indices, out["indices"])
  np.testing.assert_allclose(images, out["recon"], rtol=0, atol=1e-5)
  assert not tok.run.variables["params"]["decoder"]["Conv_0"]["kernel"].flags.writeable
  with pytest.raises(ConfigError, match=r"\[0, 16\)"):
    tok.decode_codes(np.full((1, 2, 2), 16))


# ----------------------------------------------------------------------------- the codes dataset


@pytest.mark.training
def test_codes_dataset_is_cached_per_stage_one_and_recomputed_when_it_changes(
  stage_one_dir, tmp_path, monkeypatch
):
  """Codes are the stage one's indices of its own images (eval preprocessing), cached under
  WORKDIR/codes/<fingerprint>/; the cache is read back, a stale file is recomputed, and a stage one
  trained further gets fresh codes."""
  work = str(tmp_path / "stage_one")
  shutil.copytree(stage_one_dir, work)
  config = data.data_config("codes", tokenizer_workdir=work)
  assert data.example_spec(config).shape == (4,) and data.example_spec(config).dtype == "int32"
  dataset = data.get_dataset(config)
  tok = stage_one.load_stage_one(work)
  assert dataset.info.fingerprint == tok.fingerprint and dataset.info.vocab_size == 16
  assert dataset.info.grid == (2, 2) and sorted(dataset.splits) == ["test", "train"]
  images = data.get_dataset(tok.run.config.data)
  test = images.split("test")
  x = images.info.batch_preprocess_for(False)(
    data.sources.gather(test, np.arange(len(test))), np.arange(len(test))
  )
  batch = dataset.info.batch_preprocess_for(False)(dataset.split("test").arrays, np.arange(len(test)))
  np.testing.assert_array_equal(batch["x"], tok.encode_codes(x["x"]).reshape(len(test), -1))
  np.testing.assert_array_equal(batch["label"], x["label"])
  cache = os.path.join(work, "codes", tok.fingerprint)
  assert sorted(os.listdir(cache)) == ["test.npz", "train.npz"]

  calls = []
  original = codes.encode_split
  monkeypatch.setattr(codes, "encode_split", lambda *a, **k: calls.append(a[-1]) or original(*a, **k))
  again = data.get_dataset(config)
  assert calls == []  # read from the cache
  np.testing.assert_array_equal(
    again.split("train").arrays["tokens"], dataset.split("train").arrays["tokens"]
  )
  np.savez(
    os.path.join(cache, "test.npz"), tokens=np.zeros((40, 4), np.int32), label=np.zeros(40), fingerprint="0-x"
  )
  data.get_dataset(config)
  assert calls == ["encoding test with the stage one"]  # a file of another stage one is not served

  train_tiny_vqvae(work, 6)  # the stage one changes: its latest step is another checkpoint
  calls.clear()
  changed = data.get_dataset(config)
  assert changed.info.fingerprint.startswith("6-") and len(calls) == 2
  assert os.path.isdir(os.path.join(work, "codes", changed.info.fingerprint)) and os.path.isdir(cache)


@pytest.mark.training
def test_an_unreadable_code_cache_is_encoded_again_with_one_warning(stage_one_dir, tmp_path, caplog):
  """A truncated cache file and one that is no .npz at all are encoded again, one warning each; the
  temporary file a killed cache write left is removed when the split is next opened."""
  work = str(tmp_path / "stage_one")
  shutil.copytree(stage_one_dir, work)
  config = data.data_config("codes", tokenizer_workdir=work)
  want = {role: s.arrays["tokens"] for role, s in data.get_dataset(config).splits.items()}
  cache = os.path.join(work, "codes", stage_one.load_stage_one(work).fingerprint)
  with open(os.path.join(cache, "train.npz"), "r+b") as f:
    f.truncate(os.path.getsize(f.name) // 2)  # a file cut short (EOFError, BadZipFile)
  with open(os.path.join(cache, "test.npz"), "wb") as f:
    f.write(b"\x00" * 100)  # not an .npz
  dead = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
  )
  left = os.path.join(
    cache, f"test.npz.{workdir._HOST}.{int(dead.stdout)}.x1y2z3.tmp"
  )  # its writer was killed
  with open(left, "wb") as f:
    f.write(b"half")
  with caplog.at_level(logging.WARNING, logger="ae_jax"):
    again = data.get_dataset(config)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 2 and all(
    "cannot be read" in w and "encoding the split again" in w for w in warnings
  )
  assert all("\n" not in w for w in warnings)
  for role, tokens in want.items():
    np.testing.assert_array_equal(again.split(role).arrays["tokens"], tokens)
  assert sorted(os.listdir(cache)) == ["test.npz", "train.npz"]  # rewritten, the leftover gone
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="ae_jax"):
    data.get_dataset(config)
  assert not caplog.records


def _retrain_stage_one(workdir_path: str, steps: int, seed: int) -> None:
  """Trains the stage one afresh in its own workdir (its checkpoints removed first) from another seed."""
  shutil.rmtree(os.path.join(workdir_path, "checkpoints"))
  config = make_tiny_config()
  config.model = model_config("vqvae", **TINY_VQVAE)
  config.loss = {"mse": 1.0, "commitment": 1.0}
  config.total_steps, config.evals, config.seed = steps, {}, seed
  loop.train_and_evaluate(config, workdir_path)


def _sample_in_process(*args: str) -> None:
  """experiments.sample's command with these flags, in this process (its errors raised, not printed)."""
  from experiments import sample

  sample.FLAGS(["sample", *args])
  try:
    sample.sample(["sample"])
  finally:
    sample.FLAGS.unparse_flags()


@pytest.mark.training
def test_a_prior_refuses_a_stage_one_retrained_in_its_workdir(stage_one_dir, tmp_path):
  """The stage one retrained from scratch in the same workdir (the same step number, other weights):
  sampling, evaluating, opening the codes and resuming the prior each stop with one line naming the prior
  and the fingerprints, and nothing is decoded or trained."""
  work, prior = str(tmp_path / "stage_one"), str(tmp_path / "prior")
  shutil.copytree(stage_one_dir, work)
  loop.train_and_evaluate(_prior_config("ar", work, 2), prior)
  saved = stage_one.saved_config(prior)[1]
  pinned = saved.data.tokenizer_fingerprint
  assert pinned == stage_one.load_stage_one(work).fingerprint and saved.data.tokenizer_step == 4
  _retrain_stage_one(work, 4, seed=1)
  now = stage_one.load_stage_one(work).fingerprint
  assert now.startswith("4-") and now != pinned
  changed = (
    f"was trained on the stage one {work} with fingerprint {pinned}, but its step 4 now has fingerprint "
    f"{now} (retrained or replaced); restore the stage one it was trained on, or train a new prior"
  )
  with pytest.raises(DataError, match=re.escape(f"the prior at {prior} {changed}")):
    generate.tokenizer_of(stage_one.load_run(prior))
  out = tmp_path / "samples"
  with pytest.raises(DataError, match=re.escape(f"the prior at {prior} {changed}")) as e:
    _sample_in_process(f"--workdir={prior}", "--num=2", f"--out={out}")
  assert "\n" not in str(e.value) and not (out / "samples.npz").exists()
  with pytest.raises(DataError, match=re.escape(f"this prior {changed}")):
    loop.evaluate_checkpoint(saved, prior)
  with pytest.raises(DataError, match=re.escape(changed)):
    data.get_dataset(saved.data)
  steps_before = sorted(os.listdir(os.path.join(prior, "checkpoints")))
  resumed = re.escape(f"of a prior trained on the codes of stage one {pinned} (step-fingerprint), but this ")
  with pytest.raises(CheckpointMismatchError, match=resumed + r"config's stage one is " + re.escape(now)):
    loop.train_and_evaluate(_prior_config("ar", work, 4), prior)  # the config now pins the new stage one
  assert sorted(os.listdir(os.path.join(prior, "checkpoints"))) == steps_before


@pytest.mark.training
def test_a_pinned_step_is_kept_from_pruning_and_a_lost_one_names_its_prior(stage_one_dir, tmp_path):
  """A prior pins the stage-one step it trains on (STAGE/pinned/checkpoints): the stage one trained
  further with keep_checkpoints=1 keeps it; a step lost anyway is one line naming the prior that depends
  on it, when sampling and when resuming the prior."""
  work, prior = str(tmp_path / "stage_one"), str(tmp_path / "prior")
  shutil.copytree(stage_one_dir, work)
  loop.train_and_evaluate(_prior_config("ar", work, 2), prior)
  checkpoints = os.path.join(work, "checkpoints")
  assert workdir.pinned_steps(checkpoints) == {4: [prior]}
  config = make_tiny_config()
  config.model = model_config("vqvae", **TINY_VQVAE)
  config.loss = {"mse": 1.0, "commitment": 1.0}
  config.total_steps, config.evals, config.keep_checkpoints = 12, {}, 1
  loop.train_and_evaluate(config, work)  # saves 8 and 12; keeps 4, pinned
  assert sorted(os.listdir(checkpoints), key=int) == ["4", "12"]
  run = stage_one.load_run(prior)
  assert generate.tokenizer_of(run).fingerprint == stage_one.saved_config(prior)[1].data.tokenizer_fingerprint
  shutil.rmtree(os.path.join(checkpoints, "4"))  # lost all the same (deleted by hand)
  gone = re.escape(f"the prior at {prior} depends on step 4 (fingerprint ") + r"4-\w+\) of the stage one "
  gone += re.escape(f"{work}, which is gone (") + ".*keep_checkpoints.*restore that checkpoint"
  with pytest.raises(DataNotFoundError, match=gone):
    generate.tokenizer_of(run)
  with pytest.raises(DataNotFoundError, match=gone):
    _sample_in_process(f"--workdir={prior}", "--num=2")
  with pytest.raises(DataNotFoundError, match=gone):
    loop.train_and_evaluate(stage_one.saved_config(prior)[1], prior)


@pytest.mark.training
def test_a_missing_or_unsuitable_stage_one_is_one_clear_error(tmp_path, stage_one_dir):
  with pytest.raises(DataNotFoundError, match=r"has no checkpoint .*train that run first"):
    data.example_spec(data.data_config("codes", tokenizer_workdir=str(tmp_path / "none")))
  with pytest.raises(ConfigError, match="tokenizer_workdir is empty"):
    data.example_spec(data.data_config("codes"))
  with pytest.raises(DataNotFoundError, match=r"has no step 3; it has \[4\]"):
    data.example_spec(data.data_config("codes", tokenizer_workdir=stage_one_dir, tokenizer_step=3))
  mlp = str(tmp_path / "mlp")
  config = make_tiny_config()
  config.total_steps, config.evals = 1, {}
  loop.train_and_evaluate(config, mlp)
  with pytest.raises(ConfigError, match="'mlp_ae' run, which has no discrete codes"):
    data.example_spec(data.data_config("codes", tokenizer_workdir=mlp))
  priors = r"\(ar_prior, maskgit_prior, pixelcnn_prior\)"  # the models with the code_prior ability
  with pytest.raises(ConfigError, match=f"is a 'vqvae' run, not a prior over codes {priors}"):
    generate.check_options(stage_one.load_run(stage_one_dir), generate.SampleOptions(), 4)
  config.evals = {"nll": evaluators.section("prior_likelihood")}
  with pytest.raises(ConfigError, match=f"needs a prior over codes {priors}, not 'mlp_ae'"):
    loop.train_and_evaluate(config, str(tmp_path / "mlp_nll"))
  assert not os.listdir(tmp_path / "mlp_nll" / "checkpoints")  # refused before the first step


def test_vocabularies_above_two_to_the_sixteen_are_refused():
  layout = stage_one.CodeLayout((7, 7), 2**20, (28, 28, 1), 10, "fsq")
  with pytest.raises(ConfigError, match=r"1,048,576 tokens.*at most 2\^16"):
    stage_one.check_vocab(layout, "here")
  stage_one.check_vocab(dataclasses.replace(layout, vocab_size=2**16), "here")


# ----------------------------------------------------------------------------- priors trained by the loop


def _train_losses(workdir: str) -> list[float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["loss"] for r in map(json.loads, f) if "loss" in r and "learning_rate" in r]


@pytest.mark.training
def test_ar_prior_trains_through_the_loop_and_leaves_the_stage_one_unchanged(ar_prior, stage_one_dir):
  path, summary, before = ar_prior
  losses = _train_losses(path)
  assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
  m = summary["metrics"]
  assert m["likelihood/uniform_bits_per_code"] == 4.0  # log2 16
  assert m["likelihood/bits_per_code"] < 4.0
  np.testing.assert_allclose(m["likelihood/bits_per_image"], 4 * m["likelihood/bits_per_code"], rtol=1e-6)
  np.testing.assert_allclose(m["likelihood/nll"], m["test/code_nll"], rtol=1e-5)  # the same test nats
  assert _variables_bytes(stage_one_dir) == before  # bitwise
  assert sorted(os.listdir(os.path.join(stage_one_dir, "checkpoints"))) == ["4"]
  saved = stage_one.saved_config(path)[1]
  assert saved.data.tokenizer_step == 4  # pinned: a stage one trained further is not mistaken for it


@pytest.mark.training
def test_maskgit_prior_trains_through_the_loop(stage_one_dir, tmp_path):
  path = str(tmp_path / "maskgit")
  summary = loop.train_and_evaluate(_prior_config("maskgit", stage_one_dir, 20), path)
  losses = _train_losses(path)
  assert losses[-1] < losses[0]
  m = summary["metrics"]
  assert "likelihood/masked_xent_bits_per_code" in m and "likelihood/bits_per_code" not in m
  assert 0 < m["likelihood/masked_xent_bits_per_code"] < m["likelihood/uniform_bits_per_code"]
  run = stage_one.load_run(path)
  a = generate.sample_tokens(run, 5, seed=2, options=generate.SampleOptions(steps=3), per_device=1)
  b = generate.sample_tokens(run, 5, seed=2, options=generate.SampleOptions(steps=3), per_device=1)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (5, 4) and a.min() >= 0 and a.max() < 16


def test_fixed_evaluation_mask_is_exact_and_independent_of_the_batch():
  from ae_jax.generation.maskgit import fixed_mask

  fixed_mask = jax.jit(fixed_mask, static_argnums=(1, 2, 3))
  mask = np.asarray(fixed_mask(np.arange(6, dtype=np.int32), 10, 0.33, 0))
  assert (mask.sum(1) == 3).all()
  np.testing.assert_array_equal(
    np.asarray(fixed_mask(np.asarray([4, 2], np.int32), 10, 0.33, 0)), mask[[4, 2]]
  )
  one = np.asarray(fixed_mask(np.arange(2, dtype=np.int32), 10, 0.01, 0))
  assert (one.sum(1) == 1).all()  # at least one


@pytest.mark.training
def test_the_trainer_gives_a_conditional_prior_its_batch_labels(stage_one_dir):
  """apply_model passes batch["label"] to a model with the "conditional" ability: its outputs are the
  model's for those labels, and other labels give other logits; an unconditional prior ignores them."""
  config = _prior_config("ar", f"{stage_one_dir},conditional", 1)
  assert config.model.num_classes == 10  # the synthetic stage one's classes
  options = {k: v for k, v in config.model.items() if k != "name"}
  model = get_model("ar_prior", input_shape=(4,), **options)
  x = jax.device_put(np.random.default_rng(0).integers(0, 16, (3, 4)).astype(np.int32))
  labels = np.asarray([0, 1, 2], np.int32)
  variables = jax.jit(lambda r: model.init(r, x, labels=labels))(jax.random.PRNGKey(0))
  rng = jax.random.PRNGKey(1)

  def through_the_trainer(model):
    return jax.jit(lambda p, batch: train.apply_model(model, p, {}, batch, train=False, rng=rng)[0]["logits"])

  logits = through_the_trainer(model)
  out = logits(variables["params"], {"x": x, "label": labels})
  np.testing.assert_array_equal(out, jax.jit(lambda v: model.apply(v, x, labels=labels)["logits"])(variables))
  other = logits(variables["params"], {"x": x, "label": labels[::-1]})
  assert float(np.max(np.abs(np.asarray(other) - np.asarray(out)))) > 1e-4
  plain = get_model("ar_prior", input_shape=(4,), **{**options, "num_classes": 0})
  plain_vars = jax.jit(lambda r: plain.init(r, x))(jax.random.PRNGKey(0))
  kept = through_the_trainer(plain)(plain_vars["params"], {"x": x, "label": labels})
  np.testing.assert_array_equal(kept, jax.jit(lambda v: plain.apply(v, x)["logits"])(plain_vars))


@pytest.mark.training
def test_a_conditional_prior_trains_and_samples_every_class(stage_one_dir, tmp_path):
  path = str(tmp_path / "conditional")
  summary = loop.train_and_evaluate(_prior_config("ar", f"{stage_one_dir},conditional", 6), path)
  assert np.isfinite(summary["metrics"]["likelihood/bits_per_code"])
  run = stage_one.load_run(path)
  every = generate.SampleOptions(label="all")
  tokens = generate.sample_tokens(run, 12, seed=0, options=every, per_device=1)
  np.testing.assert_array_equal(every.labels(np.arange(12), 10), np.arange(12) % 10)
  one = generate.sample_tokens(run, 12, seed=0, options=generate.SampleOptions(label=3), per_device=1)
  assert tokens.shape == one.shape == (12, 4)
  np.testing.assert_array_equal(tokens[3], one[3])  # sample 3 of "all" is class 3, from the same key
  for label, message in (
    (None, "pass --label C, or --label all"),
    (10, r"in \[0, 10\)"),
    ("x", "a class id"),
  ):
    with pytest.raises(ConfigError, match=message):
      generate.check_options(run, generate.SampleOptions(label=label), 4)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.training
def test_samples_are_deterministic_and_the_same_on_one_or_eight_devices(ar_prior):
  run = stage_one.load_run(ar_prior[0])
  options = generate.SampleOptions(temperature=1.0, top_k=8)
  eight = generate.sample_tokens(run, 19, seed=3, options=options, per_device=2)
  one = generate.sample_tokens(
    run, 19, seed=3, options=options, per_device=2, devices=jax.local_devices()[:1]
  )
  np.testing.assert_array_equal(eight, one)
  other = generate.sample_tokens(run, 19, seed=4, options=options, per_device=2)
  assert eight.shape == (19, 4) and (eight != other).any()
  greedy = generate.sample_tokens(
    run, 3, seed=5, options=generate.SampleOptions(temperature=0.0), per_device=2
  )
  assert (greedy == greedy[0]).all()  # greedy decoding of an unconditional prior ignores the key


@pytest.mark.training
def test_bad_sampling_options_are_one_clear_error(ar_prior):
  run = stage_one.load_run(ar_prior[0])
  cases = [
    (dict(), 0, "--num must be >= 1"),
    (dict(top_p=1.5), 4, "top_p must be in"),
    (dict(label=1), 4, "--label needs a class-conditional prior"),
    (dict(temperature=-1.0), 4, "--temperature must be >= 0"),
  ]
  for options, num, message in cases:
    with pytest.raises(ConfigError, match=message):
      generate.check_options(run, generate.SampleOptions(**options), num)
  for option in ("steps", "choice_temperature"):  # MaskGIT's: refused, not ignored
    with pytest.raises(ConfigError, match=f"--{option} is not an option of this prior .'ar_prior'."):
      generate.check_options(run, generate.SampleOptions(), 4, given=[option])
  generate.check_options(run, generate.SampleOptions(), 4, given=["temperature", "top_k", "top_p"])


@pytest.mark.training
def test_bits_per_code_of_the_losses_evaluator_is_its_code_nll_in_bits(ar_prior):
  """With max_examples not a multiple of the evaluation batch (13 of 16: a padded last batch), the losses
  evaluator's bits_per_code is its own exact code_nll / (L ln 2), L = 4 codes."""
  path = ar_prior[0]
  config = stage_one.saved_config(path)[1]
  config.evals = {"part": evaluators.section("losses", split="test", max_examples=13, baseline=False)}
  _, result, _ = loop.evaluate_checkpoint(config, path, names=["part"])
  m = result.metrics
  np.testing.assert_allclose(m["part/bits_per_code"], m["part/code_nll"] / (4 * math.log(2.0)), rtol=1e-6)


@pytest.mark.training
def test_sampling_refuses_an_out_file_and_keeps_the_old_samples_on_a_full_disk(
  ar_prior, tmp_path, monkeypatch
):
  """--out that is a file is refused before anything is drawn; a full disk while the samples are written
  is one line naming what OUT keeps, the earlier samples.npz and samples.png intact, no temporary file."""
  path, out = ar_prior[0], tmp_path / "out"
  a_file = tmp_path / "file"
  a_file.write_text("")
  real_draw = samplers.draw
  monkeypatch.setattr(samplers, "draw", lambda *a, **k: pytest.fail("sampled before refusing --out"))
  with pytest.raises(WorkdirError, match=re.escape(f"--out {a_file} is a file, not a folder")):
    _sample_in_process(f"--workdir={path}", "--num=2", f"--out={a_file}")
  monkeypatch.setattr(samplers, "draw", real_draw)
  _sample_in_process(f"--workdir={path}", "--num=3", "--seed=1", f"--out={out}")
  ids = samplers.sample_ids(str(out))
  assert len(set(ids.values())) == 1 and None not in ids.values() and len(ids) == 2
  before = {name: (out / name).read_bytes() for name in ids}
  real = workdir._temporary

  def full(target, write):
    if target.endswith(".png"):
      raise OSError(errno.ENOSPC, "No space left on device")
    return real(target, write)

  monkeypatch.setattr(workdir, "_temporary", full)
  with pytest.raises(WorkdirError) as e:
    _sample_in_process(f"--workdir={path}", "--num=3", "--seed=2", f"--out={out}")
  assert "\n" not in str(e.value) and "No space left on device" in str(e.value)
  assert f"keeps the earlier samples.npz and samples.png (sample id {ids['samples.npz']})" in str(e.value)
  assert {name: (out / name).read_bytes() for name in ids} == before
  assert sorted(os.listdir(out)) == ["samples.npz", "samples.png"]


def _sample_cli(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.run(
    [sys.executable, "-m", "experiments.sample", *args], cwd=ROOT, env=env, capture_output=True, text=True
  )


def _sample_cli_started(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
  command = [sys.executable, "-m", "experiments.sample", *args]
  return subprocess.Popen(
    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )


@pytest.mark.slow
@pytest.mark.training
def test_sample_cli_writes_a_grid_and_codes_deterministically(ar_prior, tmp_path):
  """Two samplers at once into one --out (seeds 1 and 2): its files are then both one sampler's, its codes
  and the images they decode to; the console shows the command's own lines only (no JAX INFO lines, the
  quality summary once)."""
  path, out = ar_prior[0], tmp_path / "shared"
  runs = [
    _sample_cli_started(f"--workdir={path}", "--num=6", f"--seed={seed}", "--top_k=4", f"--out={out}")
    for seed in (1, 2)
  ]
  for run in runs:
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert "ms per image" in stdout
    assert not [line for line in stderr.splitlines() if "INFO" in line or line.startswith("I1")], stderr
  drawn = np.load(out / "samples.npz")
  ids = samplers.sample_ids(str(out))
  assert ids == {"samples.npz": str(drawn["sample_id"]), "samples.png": str(drawn["sample_id"])}  # one pair
  assert sorted(os.listdir(out)) == ["samples.npz", "samples.png"] and int(drawn["seed"]) in (1, 2)
  want = generate.sample_tokens(
    stage_one.load_run(path), 6, seed=int(drawn["seed"]), options=generate.SampleOptions(top_k=4)
  )
  np.testing.assert_array_equal(drawn["tokens"], want)  # the codes of that sampler's seed, deterministic
  tok = stage_one.load_stage_one(stage_one.saved_config(path)[1].data.tokenizer_workdir)
  np.testing.assert_allclose(drawn["images"], tok.decode_codes(drawn["codes"]), rtol=0, atol=1e-6)
  assert drawn["codes"].shape == (6, 2, 2) and drawn["images"].shape == (6, 8, 8, 1)
  assert (out / "samples.png").stat().st_size > 0
  scored = _sample_cli(
    f"--workdir={path}",
    "--num=12",
    "--quality",
    "--feature_steps=3",
    f"--feature_cache={tmp_path / 'features'}",
    f"--out={tmp_path / 'q'}",
  )
  assert scored.returncode == 0, scored.stderr
  quality = json.loads((tmp_path / "q" / "quality.json").read_text())
  assert quality["num_samples"] == quality["num_reference"] == 12
  assert 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1
  assert quality["frechet_feature_distance"] >= 0 and quality["floor_frechet_feature_distance"] >= 0
  assert "not Inception" in quality["feature_network"] and "Fréchet feature distance" in scored.stdout
  assert (scored.stdout + scored.stderr).count("sample quality") == 1
  assert quality["sample_id"] == samplers.sample_ids(str(tmp_path / "q"))["samples.npz"]
  bad = _sample_cli(f"--workdir={path}", "--num=2", "--steps=4")
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode == 1 and last.startswith("error: --steps is not an option of this prior")
  missing = _sample_cli(f"--workdir={tmp_path / 'none'}")
  assert missing.returncode == 1 and "error:" in missing.stderr and "has no checkpoint" in missing.stderr


@pytest.mark.training
def test_the_sample_quality_evaluator_scores_what_the_sampler_draws(ar_prior, tmp_path):
  """`sample_quality` in config.evals (run here on the saved checkpoint, as experiments.evaluate does) gives
  the numbers of samplers.score on samplers.draw of the loaded run: the same samples, the same network."""
  from ae_jax import evaluators
  from ae_jax.generation import samplers

  path = ar_prior[0]
  config = stage_one.saved_config(path)[1]
  cache = str(tmp_path / "features")
  config.evals = {
    "quality": evaluators.section("sample_quality", num=12, seed=2, feature_steps=3, feature_cache=cache)
  }
  step, result, _ = loop.evaluate_checkpoint(config, path, names=["quality"])
  run = stage_one.load_run(path)
  drawn = samplers.draw(run, 12, seed=2, options=generate.SampleOptions())
  quality = samplers.score(drawn, feature_steps=3, feature_cache=cache)
  for key in ("frechet_feature_distance", "precision", "recall", "floor_frechet_feature_distance"):
    np.testing.assert_allclose(result.metrics[f"quality/{key}"], quality[key], rtol=1e-6)
  assert result.metrics["quality/num_samples"] == 12 and step == run.step
  config.evals.quality.prior = (
    "normal"  # ignored for a prior run; an autoencoder refuses it (test_latent_prior)
  )
  config.evals.quality.label = "all"
  with pytest.raises(ConfigError, match="needs a class-conditional prior"):
    loop.evaluate_checkpoint(config, path, names=["quality"])


@pytest.mark.training
def test_prior_configs_pass_the_config_check(stage_one_dir):
  from ae_jax.runner.config import check_config

  for name in ("ar", "maskgit"):
    config = _prior_config(name, stage_one_dir, 10)
    check_config(config, num_processes=1, local_devices=8)
    assert config.model.vocab_size == 16
  with pytest.raises(ConfigError, match="unknown option 'stpe'; did you mean 'step'"):
    importlib.import_module("experiments.configs.prior_ar").get_config(f"{stage_one_dir},stpe=3")
  with pytest.raises(AEJaxError):
    importlib.import_module("experiments.configs.prior_ar").get_config("")


def test_the_sample_grid_puts_one_class_in_each_column_for_label_all():
  from experiments import sample

  assert sample.grid_layout(10_000) == (256, 16) and sample.grid_layout(50) == (50, 8)
  assert sample.grid_layout(10_000, classes=10) == (250, 10)  # 25 whole rows, column c = class c
  assert sample.grid_layout(7, classes=10) == (7, 10) and sample.grid_layout(999, classes=300) == (300, 300)


def test_the_sampling_flags_are_the_sample_options():
  import dataclasses

  from experiments import sample

  assert sample.SAMPLING_FLAGS == tuple(f.name for f in dataclasses.fields(generate.SampleOptions))
