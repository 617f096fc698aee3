"""Classifier-free guidance of the class-conditional priors (ar_prior, maskgit_prior, pixelcnn_prior): label
dropout to a learned null class in training (`class_dropout`), and sampling from uncond + W (cond - uncond):
W = 0 is the null-class prior, W = 1 the conditional one; the linear schedule's weight at each position is
the closed form's; priors that never learned the null class are refused with one clear error, and
`experiments.sample --guidance` works end to end."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax.core.errors import ConfigError
from ae_jax.generation import generate, stage_one
from ae_jax.generation.code_priors import ARPrior, MaskGITPrior
from ae_jax.generation.pixelcnn_prior import PixelCNNPrior
from ae_jax.generation.sampling import guidance_weights, guide_logits, sample_logits
from ae_jax.generation.transformer import check_guidance, drop_labels
from tests.conftest import train_tiny_vqvae

K, L, C = 6, 6, 3
TRUNK = dict(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32, dropout=0.0)
PIXELCNN = dict(features=8, num_layers=2, kernel_size=3, head_features=16, grid=(2, 3))
KEYS = 6


def _build(name: str, class_dropout: float = 0.1, num_classes: int = C):
  common = dict(vocab_size=K, input_shape=(L,), num_classes=num_classes, class_dropout=class_dropout)
  if name == "pixelcnn":
    model = PixelCNNPrior(**common, **PIXELCNN)
  else:
    model = (ARPrior if name == "ar" else MaskGITPrior)(**common, **TRUNK)
  labels = jnp.zeros((2,), jnp.int32) if num_classes else None
  key = jax.random.PRNGKey(0)
  variables = model.init({"params": key, "sample": key}, jnp.zeros((2, L), jnp.int32), labels=labels)
  # larger weights than at initialisation, so that the classes (and the null class) differ clearly
  return model, jax.tree_util.tree_map(lambda v: 3.0 * v, variables)


def _label_table(name: str, variables) -> np.ndarray:
  params = variables["params"]
  if name == "pixelcnn":
    return params["class_bias_0"]["embedding"]
  return params["transformer"]["net"]["token_embed"]["embedding"]


def test_the_guided_logits_are_uncond_plus_w_times_cond_minus_uncond():
  cond, uncond = jnp.array([[1.0, -2.0, 0.5]]), jnp.array([[0.25, 3.0, -1.0]])
  np.testing.assert_array_equal(guide_logits(cond, uncond, 0.0), uncond)
  np.testing.assert_allclose(guide_logits(cond, uncond, 1.0), cond, rtol=1e-7)
  np.testing.assert_allclose(guide_logits(cond, uncond, 3.0), [[2.5, -12.0, 3.5]], rtol=1e-7)


def test_the_guidance_schedules_weights_are_their_closed_forms():
  np.testing.assert_array_equal(guidance_weights(2.5, "constant", 4), [2.5] * 4)
  np.testing.assert_allclose(guidance_weights(3.0, "linear", 5), [1.0, 1.5, 2.0, 2.5, 3.0], rtol=1e-7)
  np.testing.assert_allclose(guidance_weights(0.0, "linear", 3), [1.0, 0.5, 0.0], atol=1e-7)
  np.testing.assert_array_equal(guidance_weights(4.0, "linear", 1), [4.0])
  with pytest.raises(ConfigError, match="guidance schedule must be one of"):
    guidance_weights(2.0, "cosine", 4)


def _hand_guided(model, variables, labels, guidance: float, temperature: float) -> np.ndarray:
  """Position by position with the model's full logits, the weight 1 + (W - 1) t / (L - 1) written out:
  the reference of the linear schedule (the samplers' keys: fold_in(key of the example, t))."""
  keys = jax.random.split(jax.random.PRNGKey(7), KEYS)
  tokens = jnp.zeros((KEYS, L), jnp.int32)
  nulls = jnp.full_like(labels, C)
  for t in range(L):
    cond = model.apply(variables, tokens, labels, method="logits")[:, t]
    uncond = model.apply(variables, tokens, nulls, method="logits")[:, t]
    w = 1.0 + (guidance - 1.0) * t / (L - 1)
    guided = uncond + w * (cond - uncond)
    one = lambda k, g, t=t: sample_logits(jax.random.fold_in(k, t), g[None], temperature, 0, 1.0)[0]  # noqa: E731
    draw = jax.vmap(one)
    tokens = tokens.at[:, t].set(draw(keys, guided))
  return np.asarray(tokens)


@pytest.mark.parametrize("name", ["ar", "ar_recompute", "pixelcnn"])
def test_the_linear_guidance_schedule_draws_the_hand_written_reference(name):
  model, variables = _build(name.split("_")[0])
  method = model.draw_recompute if name == "ar_recompute" else None
  labels = jnp.arange(KEYS, dtype=jnp.int32) % C
  for temperature, guidance in ((1.0, 3.0), (0.0, 4.0), (1.0, 0.0)):
    options = dict(temperature=temperature, guidance=guidance, guidance_schedule="linear")
    drawn = _draw(model, variables, labels, method, **options)
    np.testing.assert_array_equal(drawn, _hand_guided(model, variables, labels, guidance, temperature))
  constant = _draw(model, variables, labels, method, guidance=3.0)
  linear = _draw(model, variables, labels, method, guidance=3.0, guidance_schedule="linear")
  assert (linear != constant).any()  # the schedule changes the samples


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate():
  labels = jnp.arange(20_000, dtype=jnp.int32) % C
  dropped = np.asarray(drop_labels(jax.random.PRNGKey(3), labels, 0.3, C))
  is_null = dropped == C
  np.testing.assert_array_equal(dropped[~is_null], np.asarray(labels)[~is_null])
  assert abs(is_null.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(labels))  # 4 binomial sigmas
  np.testing.assert_array_equal(drop_labels(jax.random.PRNGKey(3), labels, 0.0, C), labels)


@pytest.mark.parametrize("name", ["ar", "maskgit", "pixelcnn"])
def test_only_class_dropout_adds_the_null_class_row(name):
  """class_dropout = 0 (the default) keeps the parameters of the priors as they were (no null row)."""
  base = {"ar": K + C, "maskgit": K + 1 + C, "pixelcnn": C}[name]
  assert _label_table(name, _build(name, 0.0)[1]).shape[0] == base
  assert _label_table(name, _build(name, 0.25)[1]).shape[0] == base + 1


@pytest.mark.parametrize("name", ["ar", "pixelcnn"])
def test_training_reads_each_label_or_the_null_class(name):
  """With class_dropout 0.5, each example's training logits are its class's or the null class's."""
  model, variables = _build(name, 0.5)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (32, L), 0, K)
  labels = jnp.arange(32, dtype=jnp.int32) % C
  logits = lambda y, **kw: np.asarray(model.apply(variables, tokens, y, method="logits", **kw))  # noqa: E731
  trained = logits(labels, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  cond, null = logits(labels), logits(jnp.full_like(labels, C))
  as_cond = np.isclose(trained, cond, atol=1e-5).all(axis=(1, 2))
  as_null = np.isclose(trained, null, atol=1e-5).all(axis=(1, 2))
  assert (as_cond ^ as_null).all() and 4 < as_null.sum() < 28


def _draw(model, variables, labels, method=None, **options):
  keys = jax.random.split(jax.random.PRNGKey(7), KEYS)
  method = method or model.draw
  fn = jax.vmap(lambda key, y: method(variables, key, y[None], generate.SampleOptions(**options))[0])
  return np.asarray(jax.jit(fn)(keys, labels))


@pytest.mark.parametrize("name", ["ar", "ar_recompute", "maskgit", "pixelcnn"])
def test_w0_is_the_null_class_prior_and_w1_the_conditional_prior(name):
  model, variables = _build(name.split("_")[0])
  method = model.draw_recompute if name == "ar_recompute" else None
  labels = jnp.arange(KEYS, dtype=jnp.int32) % C
  nulls = jnp.full_like(labels, C)
  for temperature in (1.0, 0.0):
    draw = lambda y, t=temperature, **o: _draw(model, variables, y, method, temperature=t, **o)  # noqa: E731
    conditional, unconditional = draw(labels), draw(nulls)
    np.testing.assert_array_equal(draw(labels, guidance=0.0), unconditional)
    np.testing.assert_array_equal(draw(labels, guidance=1.0), conditional)
    if temperature:
      assert (draw(labels, guidance=3.0) != conditional).any()  # guidance moves the samples


def test_guidance_a_prior_cannot_use_is_one_clear_error():
  for name in ("ar", "maskgit", "pixelcnn"):
    untrained_null, variables = _build(name, 0.0)
    with pytest.raises(ConfigError, match="trained with config.model.class_dropout=0"):
      _draw(untrained_null, variables, jnp.zeros((KEYS,), jnp.int32), guidance=2.0)
  check_guidance("ar_prior", 1.0, 0, 0.0)  # no guidance asked: nothing to check
  cases = [
    (dict(guidance=2.0, num_classes=0, class_dropout=0.0), "needs a class-conditional prior"),
    (dict(guidance=1.0, num_classes=0, class_dropout=0.0, given=True), "needs a class-conditional prior"),
    (dict(guidance=-1.0, num_classes=C, class_dropout=0.1), "finite number >= 0"),
    (dict(guidance=float("nan"), num_classes=C, class_dropout=0.1), "finite number >= 0"),
  ]
  for kwargs, message in cases:
    with pytest.raises(ConfigError, match=message):
      check_guidance("ar_prior", **kwargs)
  with pytest.raises(ConfigError, match="class_dropout=0.1 needs a class-conditional prior"):
    _build("ar", 0.1, num_classes=0)
  with pytest.raises(ConfigError, match=r"class_dropout must be in \[0, 1\)"):
    _build("maskgit", 1.0)


@pytest.mark.training
def test_sample_cli_guides_a_prior_trained_with_class_dropout(tmp_path):
  """A tiny conditional AR prior trained a few steps with class_dropout through the loop, sampled by
  `experiments.sample --guidance`; the options are checked as one set."""
  from ae_jax.runner import loop
  from experiments import sample
  from experiments.configs import prior_ar

  stage = str(tmp_path / "stage_one")
  train_tiny_vqvae(stage, 4)
  config = prior_ar.get_config(f"{stage},conditional")
  config.model.update(TRUNK)
  config.model.class_dropout = 0.2
  config.batch_size = config.eval_batch_size = 16
  config.total_steps, config.log_every, config.checkpoint_every = 4, 2, 4
  config.optimizer.warmup_steps = 1
  config.evals.test.every = 0
  prior = str(tmp_path / "prior")
  loop.train_and_evaluate(config, prior)

  def cli(*args):
    sample.FLAGS(["sample", f"--workdir={prior}", *args])
    try:
      sample.sample(["sample"])
    finally:
      sample.FLAGS.unparse_flags()

  out = tmp_path / "guided"
  cli("--num=4", "--label=all", "--guidance=2.5", f"--out={out}", "--per_device=2")
  with np.load(out / "samples.npz") as f:
    guidance, tokens, labels = float(f["guidance"]), f["tokens"], f["labels"]
  assert guidance == 2.5 and tokens.shape[0] == 4
  np.testing.assert_array_equal(labels, np.arange(4) % 10)
  run = stage_one.load_run(prior)
  options = generate.SampleOptions(label="all", guidance=2.5)
  np.testing.assert_array_equal(generate.sample_tokens(run, 4, options=options, per_device=2), tokens)
  scheduled = tmp_path / "scheduled"
  cli("--num=4", "--label=all", "--guidance=2.5", "--guidance_schedule=linear", f"--out={scheduled}")
  with np.load(scheduled / "samples.npz") as f:
    assert str(f["guidance_schedule"]) == "linear"
    linear = dataclasses.replace(options, guidance_schedule="linear")
    np.testing.assert_array_equal(generate.sample_tokens(run, 4, options=linear, per_device=2), f["tokens"])
  with pytest.raises(ConfigError, match="ramps the weight from 1 to --guidance W: pass W != 1"):
    cli("--num=2", "--label=0", "--guidance_schedule=linear", f"--out={out}")
  maskgit = dataclasses.replace(run, model=MaskGITPrior(vocab_size=K, input_shape=(L,), **TRUNK))
  with pytest.raises(ConfigError, match="--guidance_schedule is not an option of this prior"):
    generate.refuse_unread(maskgit, ["guidance", "guidance_schedule"], 4)
  with pytest.raises(ConfigError, match="--steps is not an option of this prior"):
    cli("--num=2", "--label=0", "--steps=4", f"--out={out}")
  no_null = dataclasses.replace(run, model=run.model.clone(class_dropout=0.0))  # as if trained without
  with pytest.raises(ConfigError, match="has never learned the null class"):
    generate.check_options(no_null, options, 4, given=["guidance"])
  assert os.path.exists(out / "samples.png")
