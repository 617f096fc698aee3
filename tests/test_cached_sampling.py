"""The AR prior's key/value cache: each cached step's logits are the full forward's at that position, and
the cached sampler (`sample_cached`, the prior's `draw`) gives exactly the tokens of the full recompute
(`sample_autoregressive`, `draw_recompute`) for the same keys, at every temperature and filter, with and
without a class, and with guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax.core.errors import ConfigError
from ae_jax.generation import generate
from ae_jax.generation.code_priors import ARPrior
from ae_jax.generation.pixelcnn_prior import PixelCNNPrior
from ae_jax.generation.transformer import ARTransformer, zero_cache
from ae_jax.generation.trunk import SequenceTransformer

K, L, CLASSES = 7, 6, 3
TINY = dict(num_layers=2, num_heads=2, embed_dim=16, mlp_dim=32, dropout=0.0)
KEYS = 8  # samples per case, one key each (vmapped, as generate.sample_tokens draws them)


def _prior(num_classes: int, class_dropout: float = 0.0) -> tuple[ARPrior, dict]:
  model = ARPrior(
    vocab_size=K, input_shape=(L,), num_classes=num_classes, class_dropout=class_dropout, **TINY
  )
  labels = jnp.zeros((2,), jnp.int32) if num_classes else None
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, L), jnp.int32), labels=labels)
  # larger logits than at initialisation, so the filters and the temperature cut real mass
  variables = jax.tree_util.tree_map(lambda v: 3.0 * v, variables)
  return model, variables


@pytest.mark.parametrize("num_classes", [0, CLASSES])
def test_each_cached_step_gives_the_full_forwards_logits_at_its_position(num_classes):
  model = ARTransformer(vocab_size=K, seq_len=L, num_classes=num_classes, **TINY)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, L), 0, K)
  labels = jnp.array([0, 2, 1, 2]) if num_classes else None
  variables = model.init(jax.random.PRNGKey(0), tokens, labels=labels, train=False)
  full = model.apply(variables, tokens, labels=labels, train=False)["logits"]
  cache = zero_cache(lambda: model.apply(variables, 4, method="init_cache", mutable=["cache"]))
  assert "params" not in cache and jax.tree_util.tree_leaves(cache)
  ids = model.apply(variables, labels, 4, method="start_ids")

  @jax.jit
  def step(cache, ids, t):
    logits, mutated = model.apply(
      {**variables, "cache": cache}, ids, t, method="decode_step", mutable=["cache"]
    )
    return logits, mutated["cache"]

  for t in range(L):
    logits, cache = step(cache, ids, t)
    np.testing.assert_allclose(logits, full[:, t], atol=2e-5, rtol=2e-5)
    ids = tokens[:, t]


CASES = [
  dict(temperature=0.0),  # greedy
  dict(temperature=1.0),
  dict(temperature=0.6, top_k=3),
  dict(temperature=1.4, top_p=0.7),
]


def _both(model, variables, labels, options):
  """(cached, recomputed) tokens [KEYS, L] of one vmapped draw per key."""
  keys = jax.random.split(jax.random.PRNGKey(5), KEYS)

  def sampler(method):
    def one(key, label):
      return method(variables, key, None if labels is None else label[None], options)[0]

    fn = jax.jit(jax.vmap(one))
    return np.asarray(fn(keys, labels if labels is not None else jnp.zeros((KEYS,), jnp.int32)))

  return sampler(model.draw), sampler(model.draw_recompute)


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("num_classes", [0, CLASSES])
def test_the_cached_sampler_draws_the_tokens_of_the_full_recompute(case, num_classes):
  model, variables = _prior(num_classes)
  labels = jnp.arange(KEYS, dtype=jnp.int32) % CLASSES if num_classes else None
  cached, recomputed = _both(model, variables, labels, generate.SampleOptions(**case))
  np.testing.assert_array_equal(cached, recomputed)
  assert cached.shape == (KEYS, L) and cached.min() >= 0 and cached.max() < K
  if case["temperature"] > 0:
    assert len({tuple(row) for row in cached}) > 1  # the keys matter: not a constant sampler


def test_the_guided_cached_sampler_draws_the_tokens_of_the_guided_full_recompute():
  """Guidance (constant W, and the linear schedule): the cached sampler's shared cond/null cache against
  two full passes per step."""
  model, variables = _prior(CLASSES, class_dropout=0.1)
  labels = jnp.arange(KEYS, dtype=jnp.int32) % CLASSES
  linear = dict(temperature=1.0, guidance=3.0, guidance_schedule="linear", top_p=0.9)
  for options in (dict(temperature=1.0, guidance=2.5), dict(temperature=0.0, guidance=4.0, top_k=3), linear):
    cached, recomputed = _both(model, variables, labels, generate.SampleOptions(**options))
    np.testing.assert_array_equal(cached, recomputed)


def test_the_prior_samples_through_the_cache_in_generate():
  """generate's per-example sampler calls the prior's `draw`, which is the cached one for ar_prior."""
  assert ARPrior.draw is not ARPrior.draw_recompute
  model, variables = _prior(0)
  one = generate._sampler(model, generate.SampleOptions(top_k=3))
  keys = jax.random.split(jax.random.PRNGKey(5), KEYS)
  tokens = np.asarray(jax.jit(one)(variables, keys, jnp.zeros((KEYS,), jnp.int32)))
  cached, _ = _both(model, variables, None, generate.SampleOptions(top_k=3))
  np.testing.assert_array_equal(tokens, cached)


def test_decoding_a_bidirectional_trunk_is_refused():
  net = SequenceTransformer(num_embeddings=K, num_outputs=K, max_len=L, causal=False, **TINY)
  with pytest.raises(ConfigError, match="cached decoding needs a causal trunk"):
    net.init(jax.random.PRNGKey(0), jnp.zeros((1, L), jnp.int32), train=False, decode=True)


def _pixelcnn(num_classes: int):
  model = PixelCNNPrior(
    vocab_size=K,
    grid=(3, 2),
    input_shape=(L,),
    num_classes=num_classes,
    class_dropout=0.1 if num_classes else 0.0,
    features=8,
    num_layers=2,
    kernel_size=3,
    head_features=16,
  )
  labels = jnp.zeros((2,), jnp.int32) if num_classes else None
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, L), jnp.int32), labels=labels)
  return model, jax.tree_util.tree_map(lambda v: 3.0 * v, variables)


def test_the_pixelcnn_logits_of_the_first_rows_are_the_full_grids():
  model, variables = _pixelcnn(CLASSES)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, L), 0, K)
  labels = jnp.array([0, 2, 1, 3])  # 3: the null class
  full = model.apply(variables, tokens, labels, method="logits")
  for rows in (1, 2):
    part = model.apply(variables, tokens[:, : 2 * rows], labels, rows=rows, method="logits")
    np.testing.assert_allclose(part, full[:, : 2 * rows], atol=2e-5, rtol=2e-5)
  with pytest.raises(ConfigError, match=r"rows must be in \[1, 3\]"):
    model.apply(variables, tokens[:, :0], labels, rows=0, method="logits")


@pytest.mark.parametrize("num_classes", [0, CLASSES])
def test_the_pixelcnn_draws_row_by_row_the_tokens_of_the_full_recompute(num_classes):
  model, variables = _pixelcnn(num_classes)
  labels = jnp.arange(KEYS, dtype=jnp.int32) % CLASSES if num_classes else None
  cases = [*CASES, dict(temperature=1.0, guidance=2.0)] if num_classes else CASES
  for case in cases:
    by_rows, recomputed = _both(model, variables, labels, generate.SampleOptions(**case))
    np.testing.assert_array_equal(by_rows, recomputed)


def test_the_sampling_benchmark_times_samplers_that_draw_the_same_tokens():
  """benchmarks.sample_priors (smoke sizes): its cached and full AR cases, and its two PixelCNN cases,
  draw the same tokens; its forward cases run."""
  from benchmarks import sample_priors

  calls = sample_priors.cases((3, 2), 16, per_device=2, smoke=True)
  np.testing.assert_array_equal(calls["ar cached"](), calls["ar full"]())
  np.testing.assert_array_equal(calls["pixelcnn row by row"](), calls["pixelcnn full"]())
  assert calls["pixelcnn forward (3 rows)"]().shape == (2, 6, 16)
  assert calls["ar cached, guidance 3"]().shape == (2, 6)
