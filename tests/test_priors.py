"""The code priors (ae_jax.generation): the causal transformer's masking, normalisation and sampler, the logit
filters, and MaskGIT's schedule, training masks and parallel decoder. Tiny models (1 layer, width 16)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax.core.errors import ConfigError
from ae_jax.generation import (
  ARTransformer,
  MaskGITTransformer,
  decode_mask_counts,
  filter_top_k,
  filter_top_p,
  mask_schedule,
  masked_token_loss,
  maskgit_decode,
  random_mask,
  sample_autoregressive,
  sample_logits,
  token_nll,
)

K, L = 3, 4  # the AR model's vocabulary and length: K^L = 81 sequences
TINY = dict(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32)


def _init(model, tokens, labels=None):
  return jax.jit(lambda rng: model.init(rng, tokens, labels=labels, train=False))(jax.random.key(0))


@pytest.fixture(scope="module")
def ar():
  """(model, variables, jitted apply(tokens, labels)) of a class-conditional AR model with 2 classes and
  an unconditional one."""
  cond = ARTransformer(vocab_size=K, seq_len=L, num_classes=2, **TINY)
  uncond = ARTransformer(vocab_size=K, seq_len=L, **TINY)
  tokens = jnp.zeros((1, L), jnp.int32)
  v_cond, v_uncond = _init(cond, tokens, jnp.zeros(1, jnp.int32)), _init(uncond, tokens)
  apply_cond = jax.jit(lambda t, y: cond.apply(v_cond, t, labels=y, train=False)["logits"])
  apply_uncond = jax.jit(lambda t: uncond.apply(v_uncond, t, train=False)["logits"])
  return {"cond": (cond, v_cond, apply_cond), "uncond": (uncond, v_uncond, apply_uncond)}


def test_logits_are_float32_with_bfloat16_compute():
  tokens = jax.random.randint(jax.random.key(20), (2, L), 0, K)
  f32 = ARTransformer(vocab_size=K, seq_len=L, **TINY)
  variables = _init(f32, tokens)
  bf16 = ARTransformer(vocab_size=K, seq_len=L, dtype=jnp.bfloat16, **TINY)
  want = jax.jit(lambda v, t: f32.apply(v, t, train=False))(variables, tokens)["logits"]
  got = jax.jit(lambda v, t: bf16.apply(v, t, train=False))(variables, tokens)
  assert got["logits"].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got["logits"]), np.asarray(want), atol=0.05)
  # Unconditional MaskGIT in bfloat16, with the mask token as input: K real-token logits in float32.
  maskgit = MaskGITTransformer(vocab_size=K, seq_len=L, dtype=jnp.bfloat16, **TINY)
  masked = jnp.full((2, L), K, jnp.int32)
  logits = jax.jit(lambda v, t: maskgit.apply(v, t, train=False))(_init(maskgit, masked), masked)["logits"]
  assert logits.shape == (2, L, K) and logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def _all_sequences(k, length):
  return jax.device_put(np.asarray(list(itertools.product(range(k), repeat=length)), np.int32))


@jax.jit
def _bump(tokens, t):
  """tokens [B, L] with position t (traced: one program for every t) changed to the next token mod K."""
  return tokens.at[:, t].set((tokens[:, t] + 1) % K)


def _max_abs_diff(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_ar_logits_are_causal_and_shifted(ar):
  _, _, apply = ar["uncond"]
  tokens = jax.random.randint(jax.random.key(1), (3, L), 0, K)
  base = np.asarray(apply(tokens))
  assert base.shape == (3, L, K) and base.dtype == np.float32
  for t in range(L):
    changed = np.asarray(apply(_bump(tokens, t)))
    # logits[:, s] reads tokens[:, :s]: positions <= t cannot see token t.
    np.testing.assert_allclose(changed[:, : t + 1], base[:, : t + 1], atol=1e-6)
    if t < L - 1:
      assert np.max(np.abs(changed[:, t + 1 :] - base[:, t + 1 :])) > 1e-4


def test_ar_sequence_probabilities_sum_to_one(ar):
  """Brute force over all K^L sequences: sum_x exp(-nll(x)) = 1 for each start (class) token."""
  seqs = _all_sequences(K, L)
  _, _, apply_uncond = ar["uncond"]
  _, _, apply_cond = ar["cond"]
  total = jax.jit(lambda logits: jnp.sum(jnp.exp(-token_nll(logits, seqs))))
  totals = [total(apply_uncond(seqs))]
  for label in range(2):
    labels = jax.device_put(np.full(seqs.shape[:1], label, np.int32))
    totals.append(total(apply_cond(seqs, labels)))
  np.testing.assert_allclose(np.asarray(totals), 1.0, atol=1e-5)


def test_token_nll_matches_gathered_log_softmax():
  logits = np.asarray(jax.random.normal(jax.random.key(2), (4, 5, 7))) * 3.0
  tokens = np.asarray(jax.random.randint(jax.random.key(3), (4, 5), 0, 7))
  shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
  log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  want = -np.take_along_axis(log_softmax, tokens[..., None], -1)[..., 0].sum(-1)
  got = jax.jit(token_nll)(jnp.asarray(logits), jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
  # Extreme logits: finite, and the picked -1e4 logit costs 2e4 nats at each position.
  extreme = np.tile(np.asarray([1e4, -1e4, 0.0], np.float32), (1, 2, 1))
  extreme_nll = jax.jit(token_nll)(extreme, np.ones((1, 2), np.int32))
  np.testing.assert_allclose(np.asarray(extreme_nll), [4e4], rtol=1e-6)


def test_class_conditioning_changes_logits_and_labels_are_checked(ar):
  model, variables, apply = ar["cond"]
  tokens = jnp.zeros((2, L), jnp.int32)
  a, b = apply(tokens, np.zeros(2, np.int32)), apply(tokens, np.ones(2, np.int32))
  assert _max_abs_diff(a, b) > 1e-4
  with pytest.raises(ConfigError, match="class-conditional"):
    model.apply(variables, tokens, train=False)
  with pytest.raises(ConfigError, match="shape"):
    model.apply(variables, jnp.zeros((2, L + 1), jnp.int32), labels=jnp.zeros(2, jnp.int32), train=False)


def _greedy_stepwise(apply, labels, num, rng):
  """Independent greedy decoding: position t from the model run on the prefix plus random filler."""
  buffer = np.array(jax.random.randint(rng, (num, L), 0, K))
  for t in range(L):
    buffer[:, t] = np.argmax(np.asarray(apply(jnp.asarray(buffer), labels))[:, t], axis=-1)
  return buffer


def test_greedy_sampling_equals_stepwise_argmax(ar):
  _, _, apply = ar["cond"]
  labels = jnp.asarray([0, 1, 0, 1], jnp.int32)
  want = _greedy_stepwise(apply, labels, 4, jax.random.key(4))

  @jax.jit
  def sample(rng, temperature):
    return sample_autoregressive(apply, rng, 4, seq_len=L, temperature=temperature, labels=labels)

  for temperature in (0.0, -1.0, 1e-7):
    np.testing.assert_array_equal(np.asarray(sample(jax.random.key(5), temperature)), want)
  top1 = jax.jit(lambda rng: sample_autoregressive(apply, rng, 4, seq_len=L, top_k=1, labels=labels))(
    jax.random.key(6)
  )
  np.testing.assert_array_equal(np.asarray(top1), want)


def test_sampler_draws_from_the_model_and_is_deterministic(ar):
  _, _, apply = ar["uncond"]
  sample = jax.jit(lambda rng: sample_autoregressive(lambda t, _: apply(t), rng, 4000, seq_len=L))
  draws = np.asarray(sample(jax.random.key(7)))
  np.testing.assert_array_equal(draws, np.asarray(sample(jax.random.key(7))))
  assert not np.array_equal(draws, np.asarray(sample(jax.random.key(8))))
  # The empirical law of the first two tokens matches the model's p(x0) p(x1 | x0).
  seqs = _all_sequences(K, L)
  probs = np.exp(-np.asarray(jax.jit(token_nll)(apply(seqs), seqs))).reshape(K, K, -1).sum(-1)
  counts = np.zeros((K, K))
  np.add.at(counts, (draws[:, 0], draws[:, 1]), 1)
  np.testing.assert_allclose(counts / len(draws), probs, atol=0.025)


def test_top_k_and_top_p_filters_closed_form():
  probs = np.asarray([0.05, 0.5, 0.15, 0.3], np.float32)
  logits = jax.jit(jnp.log)(probs)
  top_p, top_k = (jax.jit(f, static_argnums=1) for f in (filter_top_p, filter_top_k))
  kept = lambda f: np.isfinite(np.asarray(f)).tolist()
  # Sorted masses 0.5, 0.8, 0.95, 1.0: the smallest prefix with mass >= p.
  assert kept(top_p(logits, 0.4)) == [False, True, False, False]
  assert kept(top_p(logits, 0.7)) == [False, True, False, True]
  assert kept(top_p(logits, 0.9)) == [False, True, True, True]
  assert kept(top_p(logits, 0.97)) == [True, True, True, True]
  assert kept(top_p(logits, 0.0)) == [False, True, False, False]
  assert kept(top_k(logits, 2)) == [False, True, False, True]
  assert kept(top_k(logits, 0)) == [True] * 4
  np.testing.assert_array_equal(np.asarray(top_p(logits, 0.7))[[1, 3]], np.asarray(logits)[[1, 3]])
  # Batched rows filter independently; draws stay in the kept set.
  rows = np.stack([np.asarray(logits), np.asarray(logits)[::-1]])
  draws = jax.jit(lambda r: sample_logits(r, jnp.broadcast_to(rows, (500, 2, 4)), 1.0, 0, 0.7))(
    jax.random.key(9)
  )
  assert set(np.asarray(draws)[:, 0].tolist()) == {1, 3}
  assert set(np.asarray(draws)[:, 1].tolist()) == {0, 2}


def test_zero_temperature_is_exact_argmax():
  """Near-tied logits (1e-6 apart): greedy picks the larger every time, dividing by no small number."""
  logits = jax.device_put(np.tile(np.asarray([0.0, 1e-6, -1.0], np.float32), (2000, 1)))
  for temperature in (0.0, 1e-9):
    draws = jax.jit(sample_logits)(jax.random.key(19), logits, temperature)
    assert np.all(np.asarray(draws) == 1)


# ----------------------------------------------------------------------------- MaskGIT

MK, ML = 5, 16  # MaskGIT's vocabulary (mask id 5) and length


@pytest.fixture(scope="module")
def maskgit():
  model = MaskGITTransformer(vocab_size=MK, seq_len=ML, num_classes=3, **TINY)
  variables = _init(model, jnp.zeros((1, ML), jnp.int32), jnp.zeros(1, jnp.int32))
  apply = jax.jit(lambda t, y: model.apply(variables, t, labels=y, train=False)["logits"])
  return model, variables, apply


def test_mask_schedule_values():
  r = np.asarray([0.0, 0.5, 1.0])
  np.testing.assert_allclose(mask_schedule(r, "cosine"), [1.0, math.sqrt(0.5), 0.0], atol=1e-12)
  np.testing.assert_allclose(mask_schedule(r, "linear"), [1.0, 0.5, 0.0])
  np.testing.assert_allclose(mask_schedule(r, "square"), [1.0, 0.75, 0.0])
  jax_values = np.asarray(jax.jit(mask_schedule, static_argnums=1)(r.astype(np.float32), "cosine"))
  np.testing.assert_allclose(jax_values, [1, 0.70710678, 0], atol=1e-6)
  with pytest.raises(ConfigError, match="did you mean 'cosine'"):
    mask_schedule(0.5, "cosin")


def test_decode_mask_counts_by_hand():
  # floor(16 cos(pi/2 (t+1)/8)) for t = 0..6: 15.69, 14.78, 13.30, 11.31, 8.89, 6.12, 3.12; 0 at the end.
  assert decode_mask_counts(16, 8).tolist() == [15, 14, 13, 11, 8, 6, 3, 0]
  assert decode_mask_counts(16, 4, "linear").tolist() == [12, 8, 4, 0]
  # 10 (1 - 4/5) is 1.9999999999999996 in float64: still 2 left masked, not 1.
  assert decode_mask_counts(10, 5, "linear").tolist() == [8, 6, 4, 2, 0]
  # More steps than tokens: at least one fixed per step, at least one left until the last.
  assert decode_mask_counts(4, 6).tolist() == [3, 2, 1, 1, 1, 0]


def test_maskgit_is_bidirectional_and_outputs_real_tokens(maskgit):
  _, _, apply = maskgit
  tokens = jax.random.randint(jax.random.key(10), (2, ML), 0, MK + 1)
  labels = np.asarray([0, 2], np.int32)
  base = np.asarray(apply(tokens, labels))
  assert base.shape == (2, ML, MK)
  bumped = jax.jit(lambda t: t.at[:, -1].set((t[:, -1] + 1) % (MK + 1)))(tokens)
  changed = np.asarray(apply(bumped, labels))
  assert _max_abs_diff(changed[:, 0], base[:, 0]) > 1e-4
  assert _max_abs_diff(apply(tokens, labels[::-1]), base) > 1e-4


def test_maskgit_decode_follows_the_schedule_and_is_deterministic(maskgit):
  _, _, apply = maskgit
  labels = jnp.asarray([0, 1, 2, 1], jnp.int32)
  run = jax.jit(
    lambda rng: maskgit_decode(apply, rng, 4, seq_len=ML, vocab_size=MK, steps=8, labels=labels, history=True)
  )
  history = np.asarray(run(jax.random.key(11)))
  assert history.shape == (4, 8, ML)
  np.testing.assert_array_equal((history == MK).sum(-1), np.tile([15, 14, 13, 11, 8, 6, 3, 0], (4, 1)))
  final = history[:, -1]
  assert final.min() >= 0 and final.max() < MK
  # A token, once fixed, is never re-masked nor changed.
  for t in range(7):
    fixed = history[:, t] != MK
    np.testing.assert_array_equal(history[:, t + 1][fixed], history[:, t][fixed])
  np.testing.assert_array_equal(np.asarray(run(jax.random.key(11))), history)
  assert not np.array_equal(np.asarray(run(jax.random.key(12)))[:, -1], final)


def test_maskgit_decode_keeps_the_most_confident_tokens():
  """A fake model that predicts token i % K at position i, more surely the larger i: without noise, the
  positions fixed after each iteration are the most confident ones, the last positions first."""
  target = np.arange(ML) % MK
  sureness = 1.0 + np.arange(ML, dtype=np.float32)
  fake_logits = np.eye(MK, dtype=np.float32)[target] * sureness[:, None]
  apply = lambda t, _: jnp.broadcast_to(fake_logits, (*t.shape, MK))
  history = np.asarray(
    jax.jit(
      lambda rng: maskgit_decode(
        apply,
        rng,
        2,
        seq_len=ML,
        vocab_size=MK,
        steps=8,
        temperature=0.0,
        choice_temperature=0.0,
        history=True,
      )
    )(jax.random.key(13))
  )
  for t, masked in enumerate([15, 14, 13, 11, 8, 6, 3, 0]):
    want = np.where(np.arange(ML) < masked, MK, np.asarray(target))
    np.testing.assert_array_equal(history[:, t], np.tile(want, (2, 1)))
  decoded = jax.jit(
    lambda rng: maskgit_decode(
      apply, rng, 2, seq_len=ML, vocab_size=MK, steps=8, temperature=0.0, choice_temperature=0.0
    )
  )(jax.random.key(13))
  np.testing.assert_array_equal(np.asarray(decoded), history[:, -1])


def test_random_mask_counts_and_frequencies():
  batch = 4096
  tokens = jax.random.randint(jax.random.key(14), (batch, ML), 0, MK)
  masks = jax.jit(lambda r, t: random_mask(r, t, mask_id=MK))
  masked, mask = masks(jax.random.key(15), tokens)
  masked, mask, tokens = map(np.asarray, (masked, mask, tokens))
  counts = mask.sum(-1)
  assert counts.min() >= 1 and counts.max() <= ML
  np.testing.assert_array_equal(masked, np.where(mask, MK, tokens))
  # E[max(1, ceil(16 cos(pi/2 r)))] / 16 for r ~ U[0, 1), by a fine midpoint rule.
  r = (np.arange(200_000) + 0.5) / 200_000
  expected = np.mean(np.maximum(1, np.ceil(ML * np.cos(0.5 * np.pi * r)))) / ML
  assert abs(counts.mean() / ML - expected) < 0.01
  # Positions are chosen uniformly: every position is masked equally often.
  np.testing.assert_allclose(mask.mean(0), expected, atol=0.03)
  one = np.asarray(masks(jax.random.key(16), np.zeros((8, 1), np.int32))[1])
  assert one.all()


def test_masked_token_loss_is_the_mean_over_masked_positions():
  logits = jax.random.normal(jax.random.key(17), (3, 4, MK))
  tokens = jax.random.randint(jax.random.key(18), (3, 4), 0, MK)
  mask = np.asarray([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
  log_probs = np.asarray(jax.jit(jax.nn.log_softmax)(logits))
  nll = -np.take_along_axis(log_probs, np.asarray(tokens)[..., None], -1)[..., 0]
  want = [nll[0, [0, 2]].mean(), 0.0, nll[2].mean()]
  np.testing.assert_allclose(np.asarray(jax.jit(masked_token_loss)(logits, tokens, mask)), want, rtol=1e-5)
