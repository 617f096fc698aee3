"""LSTM autoencoders: shapes of every family, padding masks, EncDec-AD's reverse teacher-forced decoder."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import losses
from ae_jax.models import MODELS, get_model
from ae_jax.runner import loop

FAMILIES = {  # name: tiny options
  "lstm_ae_repeat": {"units": 5},
  "lstm_ae_stacked": {"embedding_dim": 3},
  "lstm_encdec_ad": {"hidden": 4},
  "lstm_ae_seq": {"hidden": 4},
}
CODE_SHAPES = {"lstm_ae_repeat": (5,), "lstm_ae_stacked": (3,), "lstm_encdec_ad": (8,), "lstm_ae_seq": (7, 4)}


def _variables(model, x, seed=0):
  """Concrete variables filled in numpy (jit-compiling Flax's initialisers of scanned cells takes seconds
  on CPU), cast there and put with jax.device_put (jnp.asarray would compile a cast per shape): kernels
  (the LSTMs' input_kernel and recurrent_kernel too) ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2),
  embeddings ~ N(0, 1)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)

  def fill(path, leaf):
    name = path[-1].key
    scale = 1.0 / math.sqrt(leaf.shape[0]) if name.endswith("kernel") else 0.1 if name == "bias" else 1.0
    return jax.device_put(rng.normal(scale=scale, size=leaf.shape).astype(leaf.dtype))

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _mask(lengths, time):
  return (np.arange(time)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("vocab", [0, 11])
def test_shapes_of_every_family(name, vocab):
  shape = (7,) if vocab else (7, 2)
  model = get_model(name, input_shape=shape, vocab_size=vocab, embed_dim=3, **FAMILIES[name])
  x = jax.ShapeDtypeStruct((3, *shape), jnp.int32 if vocab else jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mask=jnp.ones((3, 7))), variables, x)
  assert out["code"].shape == (3, *CODE_SHAPES[name])
  assert out["recon"].shape == (3, *shape)
  if vocab:
    assert out["logits"].shape == (3, 7, vocab) and out["recon"].dtype == jnp.int32
  assert name in MODELS


def test_wrong_feature_count_is_a_clear_error():
  model = get_model("lstm_ae_repeat", input_shape=(7, 2), units=3)
  with pytest.raises(ValueError, match=r"expects inputs \[batch, time, 2\]"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 7, 3), jnp.float32))


@pytest.mark.parametrize("name", FAMILIES)
def test_padding_changes_neither_loss_nor_gradient(name):
  """Lengths 8, 5, 2 padded with NaN, or with large numbers: the same per-example loss and finite, equal
  gradients; and the length-5 sequence gets the loss it has alone, without padding."""
  model = get_model(name, input_shape=(8, 2), **FAMILIES[name])
  rng = np.random.default_rng(1)
  seqs = rng.normal(size=(3, 8, 2)).astype(np.float32)
  mask = _mask([8, 5, 2], 8)
  x_nan = np.where(mask[..., None] > 0, seqs, np.nan).astype(np.float32)
  x_big = np.where(mask[..., None] > 0, seqs, 1e3 * rng.normal(size=seqs.shape)).astype(np.float32)
  variables = _variables(model, seqs)

  @jax.jit
  def loss_and_grad(v, x, mask):
    def loss(v):
      per_example = losses.LOSSES["mse"](model.apply(v, x, train=True, mask=mask), {"x": x, "mask": mask})
      return per_example.sum(), per_example

    return jax.value_and_grad(loss, has_aux=True)(v)

  (_, loss_nan), grad_nan = loss_and_grad(variables, x_nan, mask)
  (_, loss_big), grad_big = loss_and_grad(variables, x_big, mask)
  np.testing.assert_allclose(loss_nan, loss_big, rtol=1e-5)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grad_nan))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grad_nan, grad_big)
  alone = seqs[1:2, :5]
  alone_loss = jax.jit(lambda v, x: losses.mse(model.apply(v, x, train=True)["recon"], x))(variables, alone)
  np.testing.assert_allclose(alone_loss[0], loss_nan[1], rtol=1e-5)


def test_token_front_end_masked_cross_entropy():
  model = get_model("lstm_ae_seq", input_shape=(5,), vocab_size=6, embed_dim=3, hidden=4)
  tokens = np.array([[1, 2, 3, 4, 5], [5, 4, 3, 0, 0]], np.int32)
  mask = _mask([5, 3], 5)
  variables = _variables(model, tokens)

  @jax.jit
  def apply(x, mask):  # the model's outputs, its token losses and its log-probabilities, one program
    out = model.apply(variables, x, mask=mask)
    batch = {"x": x} if mask is None else {"x": x, "mask": mask}
    metrics = {k: losses.LOSSES[k](out, batch) for k in ("token_xent", "token_accuracy")}
    return out, metrics, jax.nn.log_softmax(out["logits"])

  _, metrics, logp = jax.device_get(apply(tokens, mask))
  xent = metrics["token_xent"]
  expected = [-np.mean([logp[b, t, tokens[b, t]] for t in range(n)]) for b, n in enumerate([5, 3])]
  np.testing.assert_allclose(xent, expected, rtol=1e-5)
  _, alone, _ = apply(tokens[1:, :3], None)  # the second sequence without padding
  np.testing.assert_allclose(alone["token_xent"], xent[1:], rtol=1e-5)
  accuracy = metrics["token_accuracy"]
  assert accuracy.shape == (2,) and np.all((accuracy >= 0) & (accuracy <= 1))


# ----------------------------------------------------------------------------- EncDec-AD


@pytest.fixture(scope="module")
def encdec():
  """A tiny EncDec-AD on two sequences (lengths 5 and 3, T = 5) and on five copies of the first with
  x_t changed for t = 0..4; every decoding uses the first two sequences' encoder states."""
  model = get_model("lstm_encdec_ad", input_shape=(5, 1), hidden=4)
  x = np.random.default_rng(2).normal(size=(2, 5, 1)).astype(np.float32)
  v = _variables(model, x)
  perturbed = np.repeat(x[:1], 5, axis=0)
  perturbed[np.arange(5), np.arange(5), 0] += 1.0
  xs = np.concatenate([x, perturbed])  # [7, 5, 1]
  mask = _mask([5, 3, 5, 5, 5, 5, 5], 5)
  encode = jax.jit(
    lambda x, mask: jax.tree.map(
      lambda s: s[np.array([0, 1, 0, 0, 0, 0, 0])], model.apply(v, x, mask, method="encode")
    )
  )
  state = encode(x, mask[:2])
  decode = jax.jit(
    lambda xs, teacher: model.apply(v, state, xs, mask, teacher=teacher, method="decode"), static_argnums=1
  )
  apply = jax.jit(lambda xs, train: model.apply(v, xs, train=train, mask=mask)["recon"], static_argnums=1)
  out = {"teacher": decode(xs, True), "free": decode(xs, False), "h": state[1][:2]}
  out.update({"call_train": apply(xs, True)[:2], "call_infer": apply(xs, False)[:2]})
  return v, xs, jax.device_get(out)


def test_encdec_ad_first_output_is_the_last_step_from_the_encoder_state(encdec):
  """Decoding starts at each sequence's last real step: x'_{n-1} = Dense(h_E), before any decoder input."""
  v, _, out = encdec
  head = v["params"]["decoder"]["head"]
  expected = out["h"] @ head["kernel"] + head["bias"]
  for recon in (out["teacher"][0], out["free"][0], out["call_train"], out["call_infer"]):
    np.testing.assert_allclose(recon[[0, 1], [4, 2]], expected, rtol=1e-5, atol=1e-6)


def test_encdec_ad_reads_the_reversed_window_true_values_in_training_own_outputs_at_inference(encdec):
  _, x, out = encdec
  # Training: decoding step k reads the true point x_{n-k} (the window reversed, shifted by one).
  _, inputs = out["teacher"]
  np.testing.assert_array_equal(inputs[0, :, 0], [0.0, x[0, 4, 0], x[0, 3, 0], x[0, 2, 0], x[0, 1, 0]])
  np.testing.assert_array_equal(inputs[1, :3, 0], [0.0, x[1, 2, 0], x[1, 1, 0]])
  # Inference: step k reads the output of step k - 1, i.e. x'_{n-k} (recon is in the original order).
  recon, inputs = out["free"]
  np.testing.assert_allclose(inputs[0, 1:, 0], recon[0, ::-1][:4, 0], rtol=1e-6)
  np.testing.assert_allclose(inputs[1, 1:3, 0], recon[1, 2::-1][:2, 0], rtol=1e-6)
  # Given the encoder state, changing x_t changes x'_j for exactly the j < t in training (they are decoded
  # after x_t is read), and nothing at inference.
  changed = np.abs(out["teacher"][0][2:, :, 0] - out["teacher"][0][:1, :, 0]) > 1e-7  # [t, j]
  np.testing.assert_array_equal(changed, np.tril(np.ones((5, 5), bool), k=-1))
  np.testing.assert_array_equal(out["free"][0][2:], np.repeat(out["free"][0][:1], 5, axis=0))
  # The model's own paths are these two: teacher forcing when training, free running otherwise.
  np.testing.assert_allclose(out["call_train"], out["teacher"][0][:2], rtol=1e-6)
  np.testing.assert_allclose(out["call_infer"], out["free"][0][:2], rtol=1e-6)


def test_encdec_ad_tokens_feed_back_the_embedding_of_the_argmax():
  model = get_model("lstm_encdec_ad", input_shape=(4,), vocab_size=5, embed_dim=3, hidden=4)
  tokens = np.array([[1, 4, 2, 3]], np.int32)
  v = _variables(model, tokens)
  decode = jax.jit(
    lambda teacher: model.apply(
      v, model.apply(v, tokens, method="encode"), tokens, teacher=teacher, method="decode"
    ),
    static_argnums=0,
  )
  table = np.asarray(v["params"]["embed"]["embedding"])
  logits, inputs = jax.device_get(decode(False))
  previous = np.argmax(logits[0, ::-1], axis=-1)[:3]  # decoding order: step k - 1's most likely token
  np.testing.assert_allclose(inputs[0, 1:], table[previous], rtol=1e-6)
  _, inputs = decode(True)
  np.testing.assert_allclose(inputs[0, 1:], table[tokens[0, ::-1][:3]], rtol=1e-6)


@pytest.mark.training
def test_trains_on_masked_token_batches_through_the_trainer(tiny_config, tmp_path):
  """The pmapped trainer feeds batch["mask"] to the model; token_xent falls, token_accuracy is reported."""
  c = tiny_config
  c.model = {"name": "lstm_encdec_ad", "vocab_size": 5, "embed_dim": 4, "hidden": 8}
  c.loss = {"token_xent": 1.0, "token_accuracy": 0.0}
  c.data = {
    "name": "synthetic_sequences",
    "vocab_size": 5,
    "time": 6,
    "num_train": 64,
    "num_test": 16,
    "num_threads": 1,
    "cache_in_memory": True,
  }
  c.total_steps, c.log_every, c.checkpoint_every, c.optimizer.learning_rate = 8, 8, 0, 2e-2
  summary = loop.train_and_evaluate(c, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert rows[0]["token_xent"] < math.log(5) and 0.0 <= summary["metrics"]["test/token_accuracy"] <= 1.0
  assert summary["metrics"]["test/token_xent"] < math.log(5)
