"""Tests for ae_jax.losses against closed forms and independent numpy references."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import losses
from ae_jax.losses import divergences

RNG = np.random.default_rng(0)


def _np_log_sigmoid(x):
  """log sigmoid(x) in float64 numpy, stable for large |x|."""
  x = np.asarray(x, np.float64)
  return -np.logaddexp(0.0, -x)


def _np_gaussian_logpdf(x, mean, var):
  """log N(x | mean, var) elementwise in float64."""
  return -0.5 * np.log(2.0 * np.pi * var) - 0.5 * (x - mean) ** 2 / var


# ----------------------------------------------------------------------------- mse / l1


@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 6), (2, 4, 4, 3)])
@pytest.mark.parametrize("name,ref", [("mse", lambda d: d**2), ("l1", np.abs)])
def test_mse_l1_match_numpy_mean_over_non_batch_axes(shape, name, ref):
  """mse/l1 average the elementwise error over every non-batch axis, returning [batch]."""
  pred = RNG.normal(size=shape).astype(np.float32)
  target = RNG.normal(size=shape).astype(np.float32)
  fn = jax.jit(getattr(losses, name))
  out = fn(pred, target)
  chex.assert_shape(out, (shape[0],))
  expected = ref(pred.astype(np.float64) - target).reshape(shape[0], -1).mean(axis=1)
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,ref", [("mse", lambda d: d**2), ("l1", np.abs)])
def test_masked_mean_counts_only_unmasked_positions(name, ref):
  """A [batch, time] mask on [batch, time, feat] data averages over the unmasked (time, feat) cells only."""
  b, t, f = 3, 6, 4
  pred = RNG.normal(size=(b, t, f)).astype(np.float32)
  target = RNG.normal(size=(b, t, f)).astype(np.float32)
  lengths = np.array([6, 3, 1])
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
  out = jax.jit(getattr(losses, name))(pred, target, mask)
  chex.assert_shape(out, (b,))
  err = ref(pred.astype(np.float64) - target)
  expected = np.array([err[i, : lengths[i]].mean() for i in range(b)])
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5, atol=1e-6)
  # Not the unmasked mean: the mask must change the answer for the padded rows.
  assert not np.allclose(out[1:], err.reshape(b, -1).mean(axis=1)[1:], rtol=1e-3)


@pytest.mark.parametrize("name", ["mse", "l1"])
@pytest.mark.parametrize("fill", [1e6, np.nan, np.inf])
def test_masked_positions_do_not_change_the_result(name, fill):
  """Garbage (huge, NaN, inf) in pred and target at masked positions leaves the value unchanged and finite."""
  b, t, f = 2, 5, 3
  pred = RNG.normal(size=(b, t, f)).astype(np.float32)
  target = RNG.normal(size=(b, t, f)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], np.float32)
  fn = jax.jit(getattr(losses, name))
  clean = fn(pred, target, mask)
  pred_bad, target_bad = pred.copy(), target.copy()
  pred_bad[mask == 0] = fill
  target_bad[mask == 0] = -fill if not np.isnan(fill) else fill
  dirty = fn(pred_bad, target_bad, mask)
  assert np.all(np.isfinite(dirty))
  chex.assert_trees_all_close(dirty, clean, rtol=1e-6)


def test_masked_mean_accepts_boolean_mask_and_all_masked_row_is_zero():
  """A bool mask works like a float one, and a fully masked example gives 0 (not 0/0 = NaN)."""
  pred = RNG.normal(size=(2, 4, 3)).astype(np.float32)
  target = np.zeros_like(pred)
  mask = np.array([[True, True, False, False], [False] * 4])
  out = jax.jit(losses.mse)(pred, target, mask)
  expected0 = (pred[0, :2].astype(np.float64) ** 2).mean()
  chex.assert_trees_all_close(out, np.array([expected0, 0.0], np.float32), rtol=1e-5)


def test_masked_gradient_is_zero_at_masked_positions():
  """The gradient of a masked mse wrt pred is 2 (pred - target) / count on unmasked cells and 0 elsewhere."""
  b, t, f = 2, 4, 3
  pred = RNG.normal(size=(b, t, f)).astype(np.float32)
  target = RNG.normal(size=(b, t, f)).astype(np.float32)
  target[:, 2:] = 1e6  # finite garbage in the padding
  mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
  grad = jax.jit(jax.grad(lambda p: losses.mse(p, target, mask).sum()))(pred)
  count = mask.sum(axis=1)[:, None, None] * f
  expected = np.where(mask[..., None] > 0, 2.0 * (pred - target) / count, 0.0)
  chex.assert_trees_all_close(grad, expected.astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  "name",
  [
    "mse",
    "l1",
    "bernoulli_nll",
    "gaussian_nll",
  ],
)
def test_masked_nan_padding_does_not_leak_into_gradients(name):
  """NaN in the padded part of the target must not make the gradient wrt the prediction NaN."""
  pred = RNG.normal(size=(2, 4, 3)).astype(np.float32)
  target = RNG.uniform(size=(2, 4, 3)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
  target[mask == 0] = np.nan
  fn = getattr(losses, name)
  grad = jax.jit(jax.grad(lambda p: fn(p, target, mask=mask).sum()))(pred)
  assert np.all(np.isfinite(grad))
  chex.assert_trees_all_close(grad[mask == 0], np.zeros_like(grad[mask == 0]), atol=0.0)


# ----------------------------------------------------------------------------- bernoulli_nll


def test_bernoulli_nll_matches_numpy_for_moderate_logits():
  """bernoulli_nll sums -[t log s + (1 - t) log(1 - s)] over non-batch axes, s = sigmoid(logits)."""
  logits = RNG.normal(scale=3.0, size=(4, 5, 6)).astype(np.float32)
  target = RNG.uniform(size=(4, 5, 6)).astype(np.float32)
  target[0] = (target[0] > 0.5).astype(np.float32)  # binary targets too
  out = jax.jit(losses.bernoulli_nll)(logits, target)
  chex.assert_shape(out, (4,))
  s = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  expected = -(target * np.log(s) + (1 - target) * np.log(1 - s)).reshape(4, -1).sum(axis=1)
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5)


@pytest.mark.parametrize("logit", [50.0, -50.0, 100.0, -100.0])
@pytest.mark.parametrize("target", [0.0, 1.0, 0.3])
def test_bernoulli_nll_is_finite_and_exact_for_large_logits(logit, target):
  """For |l| >> 1: -log sigmoid(l) -> max(-l, 0) and -log(1 - sigmoid(l)) -> max(l, 0); no inf or NaN."""
  logits = np.full((1, 3), logit, np.float32)
  targets = np.full((1, 3), target, np.float32)
  out = jax.jit(losses.bernoulli_nll)(logits, targets)
  assert np.all(np.isfinite(out))
  # Analytic limit (exact to float precision: the neglected terms are below exp(-50)).
  limit = 3 * (target * max(-logit, 0.0) + (1 - target) * max(logit, 0.0))
  reference = -3 * (target * _np_log_sigmoid(logit) + (1 - target) * _np_log_sigmoid(-logit))
  np.testing.assert_allclose(reference, limit, atol=1e-12)
  chex.assert_trees_all_close(out, np.array([limit], np.float32), rtol=1e-6, atol=1e-6)


def test_bernoulli_nll_gradient_is_sigmoid_minus_target():
  """d/dl bernoulli_nll = sigmoid(l) - t, also where sigmoid saturates."""
  logits = np.array([[-100.0, -50.0, -3.0, -0.5, 0.0, 0.5, 3.0, 50.0, 100.0]], np.float32)
  target = np.array([[1.0, 0.0, 0.2, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0]], np.float32)
  grad = jax.jit(jax.grad(lambda z: losses.bernoulli_nll(z, target).sum()))(logits)
  expected = 1.0 / (1.0 + np.exp(-logits.astype(np.float64))) - target
  assert np.all(np.isfinite(grad))
  chex.assert_trees_all_close(grad, expected.astype(np.float32), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- gaussian_nll


def test_gaussian_nll_unit_variance_closed_form():
  """With logvar = 0: nll = 0.5 * sum((x - m)^2) + 0.5 * D * log(2 pi)."""
  mean = RNG.normal(size=(3, 4, 5)).astype(np.float32)
  target = RNG.normal(size=(3, 4, 5)).astype(np.float32)
  out = jax.jit(losses.gaussian_nll)(mean, target, 0.0)
  chex.assert_shape(out, (3,))
  d = 4 * 5
  sq = ((target.astype(np.float64) - mean) ** 2).reshape(3, -1).sum(axis=1)
  expected = 0.5 * sq + 0.5 * d * np.log(2 * np.pi)
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5)
  # And the default logvar is 0.
  chex.assert_trees_all_close(jax.jit(losses.gaussian_nll)(mean, target), out, rtol=1e-6)


@pytest.mark.parametrize("logvar_kind", ["scalar", "per_feature", "full"])
def test_gaussian_nll_matches_numpy_density(logvar_kind):
  """gaussian_nll = -sum log N(x | m, exp(logvar)) for a scalar, broadcast or full-shape logvar."""
  shape = (3, 4, 5)
  mean = RNG.normal(size=shape).astype(np.float32)
  target = RNG.normal(size=shape).astype(np.float32)
  logvar = {
    "scalar": np.float32(-0.7),
    "per_feature": RNG.normal(scale=0.5, size=(5,)).astype(np.float32),
    "full": RNG.normal(scale=0.5, size=shape).astype(np.float32),
  }[logvar_kind]
  out = jax.jit(losses.gaussian_nll)(mean, target, logvar)
  var = np.exp(np.broadcast_to(np.asarray(logvar, np.float64), shape))
  expected = -_np_gaussian_logpdf(target.astype(np.float64), mean, var).reshape(3, -1).sum(axis=1)
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5)


def test_gaussian_nll_masked():
  """A [batch, time] mask drops padded steps from the sum (garbage there does not matter)."""
  mean = RNG.normal(size=(2, 4, 3)).astype(np.float32)
  target = RNG.normal(size=(2, 4, 3)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
  target[mask == 0] = np.nan
  out = jax.jit(losses.gaussian_nll)(mean, target, 0.0, mask)
  expected = [
    -_np_gaussian_logpdf(target[i, :n].astype(np.float64), mean[i, :n], 1.0).sum()
    for i, n in enumerate([3, 1])
  ]
  chex.assert_trees_all_close(out, np.array(expected, np.float32), rtol=1e-5)


# ----------------------------------------------------------------------------- gaussian_kl


def test_gaussian_kl_closed_form():
  """KL(N(m, s^2) || N(0, 1)) = sum 0.5 (s^2 + m^2 - 1 - log s^2) over latent dims."""
  mean = RNG.normal(size=(4, 6)).astype(np.float32)
  logvar = RNG.normal(scale=0.8, size=(4, 6)).astype(np.float32)
  out = jax.jit(losses.gaussian_kl)(mean, logvar)
  chex.assert_shape(out, (4,))
  m, lv = mean.astype(np.float64), logvar.astype(np.float64)
  expected = 0.5 * (np.exp(lv) + m**2 - 1 - lv).sum(axis=1)
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5)


def test_gaussian_kl_matches_monte_carlo():
  """The closed form agrees with E_q[log q(z) - log p(z)] from 200k samples, within 5 standard errors."""
  mean = np.array([[0.5, -1.0, 0.0], [2.0, 0.3, -0.4]])
  logvar = np.array([[0.0, -1.0, 0.7], [-0.5, 0.4, -2.0]])
  out = np.asarray(jax.jit(losses.gaussian_kl)(mean.astype(np.float32), logvar.astype(np.float32)))
  rng = np.random.default_rng(1234)
  n = 200_000
  var = np.exp(logvar)
  z = mean + np.sqrt(var) * rng.standard_normal(size=(n, *mean.shape))
  log_ratio = (_np_gaussian_logpdf(z, mean, var) - _np_gaussian_logpdf(z, 0.0, 1.0)).sum(
    axis=-1
  )  # [n, batch]
  estimate = log_ratio.mean(axis=0)
  stderr = log_ratio.std(axis=0, ddof=1) / math.sqrt(n)
  assert np.all(stderr > 0)
  np.testing.assert_array_less(np.abs(out - estimate), 5 * stderr + 1e-5)


def test_gaussian_kl_zero_at_prior_with_zero_gradient():
  """KL is 0 when q = p (mean 0, logvar 0), and its gradient wrt both arguments vanishes there."""
  mean = np.zeros((2, 5), np.float32)
  logvar = np.zeros((2, 5), np.float32)
  chex.assert_trees_all_close(jax.jit(losses.gaussian_kl)(mean, logvar), np.zeros(2, np.float32), atol=0.0)
  kl_grad = jax.jit(jax.grad(lambda m, lv: losses.gaussian_kl(m, lv).sum(), argnums=(0, 1)))
  grads = kl_grad(mean, logvar)
  chex.assert_trees_all_close(grads, (np.zeros((2, 5), np.float32), np.zeros((2, 5), np.float32)), atol=0.0)
  # Away from the prior the gradient is (m, 0.5 (exp(lv) - 1)), so the test above is not vacuous.
  m, lv = np.full((1, 2), 0.5, np.float32), np.full((1, 2), 1.0, np.float32)
  gm, glv = kl_grad(m, lv)
  chex.assert_trees_all_close((gm, glv), (m, 0.5 * (np.exp(lv) - 1.0)), rtol=1e-6)


def test_gaussian_kl_latent_mask():
  """A per-time-step latent mask sums the KL over valid steps only."""
  mean = RNG.normal(size=(2, 4, 3)).astype(np.float32)
  logvar = RNG.normal(scale=0.5, size=(2, 4, 3)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], np.float32)
  out = jax.jit(losses.gaussian_kl)(mean, logvar, mask)
  kl = 0.5 * (np.exp(logvar.astype(np.float64)) + mean.astype(np.float64) ** 2 - 1 - logvar)
  expected = np.array([kl[0, :2].sum(), kl[1].sum()])
  chex.assert_trees_all_close(out, expected.astype(np.float32), rtol=1e-5)


# ----------------------------------------------------------------------------- registry and objective


def _outputs_and_batch(b=3):
  """Model outputs and a batch with every field the built-in terms read."""
  x = RNG.uniform(-1, 1, size=(b, 4, 4, 1)).astype(np.float32)
  outputs = {
    "recon": RNG.uniform(-1, 1, size=(b, 4, 4, 1)).astype(np.float32),
    "logits": RNG.normal(size=(b, 4, 4, 1)).astype(np.float32),
    "mean": RNG.normal(size=(b, 2)).astype(np.float32),
    "logvar": RNG.normal(scale=0.3, size=(b, 2)).astype(np.float32),
  }
  return outputs, {"x": x}


@pytest.fixture
def registered_term():
  """Registers a throw-away 'test_max_abs' term and removes it afterwards."""
  name = "test_max_abs"
  assert name not in losses.LOSSES

  @losses.register(name)
  def max_abs(outputs, batch):
    return jnp.abs(outputs["recon"] - batch["x"]).reshape(batch["x"].shape[0], -1).max(axis=1)

  yield name, max_abs
  losses.LOSSES.unregister(name)


def test_builtin_terms_registered():
  """LOSSES holds the five built-in terms, each wired to the matching primitive and model output."""
  assert {"mse", "l1", "bernoulli_nll", "gaussian_nll", "kl"} <= set(losses.LOSSES)
  outputs, batch = _outputs_and_batch()
  primitives = lambda outputs, batch: {
    "mse": losses.mse(outputs["recon"], batch["x"]),
    "l1": losses.l1(outputs["recon"], batch["x"]),
    "bernoulli_nll": losses.bernoulli_nll(outputs["logits"], batch["x"]),
    "gaussian_nll": losses.gaussian_nll(outputs["recon"], batch["x"]),
    "kl": losses.gaussian_kl(outputs["mean"], outputs["logvar"]),
  }
  expected = jax.jit(primitives)(outputs, batch)
  got = jax.jit(lambda o, b: {name: losses.LOSSES[name](o, b) for name in expected})(outputs, batch)
  chex.assert_trees_all_close(got, expected, rtol=1e-6)


def test_register_adds_a_term_usable_by_make_objective(registered_term):
  """A term added with @register is in LOSSES and make_objective weights it like a built-in one."""
  name, fn = registered_term
  assert losses.LOSSES[name].fn is fn
  outputs, batch = _outputs_and_batch()
  objective = jax.jit(losses.make_objective({name: 2.0, "mse": 1.0}))
  total, terms = objective(outputs, batch, jnp.int32(0))
  expected_term = np.abs(outputs["recon"] - batch["x"]).reshape(3, -1).max(axis=1)
  chex.assert_trees_all_close(terms[name], expected_term, rtol=1e-6)
  chex.assert_trees_all_close(total, 2.0 * expected_term + terms["mse"], rtol=1e-6)


def test_register_duplicate_raises(registered_term):
  """Registering an existing name (built-in or custom) from another module raises ValueError and keeps the
  original."""
  name, fn = registered_term

  def other(outputs, batch):
    return batch["x"]

  other.__module__ = "some_other_module"
  for existing in (name, "mse"):
    before = losses.LOSSES[existing]
    with pytest.raises(ValueError, match="already registered"):
      losses.register(existing)(other)
    assert losses.LOSSES[existing] is before


def test_the_same_function_registered_again_replaces_itself(registered_term):
  """A notebook cell or module run twice defines an equal function again: it replaces the first."""
  name, fn = registered_term

  def again(outputs, batch):
    return fn(outputs, batch)

  assert losses.register(name)(again) is again and losses.LOSSES[name].fn is again


def test_make_objective_weighted_sum():
  """make_objective({'mse': 1, 'kl': 0.5}) returns total = mse + 0.5 kl per example, plus each term."""
  outputs, batch = _outputs_and_batch()
  objective = jax.jit(losses.make_objective({"mse": 1.0, "kl": 0.5}))
  total, terms = objective(outputs, batch, jnp.int32(7))
  assert set(terms) == {"mse", "kl"}
  chex.assert_shape([total, terms["mse"], terms["kl"]], (3,))
  mse = ((outputs["recon"].astype(np.float64) - batch["x"]) ** 2).reshape(3, -1).mean(axis=1)
  m, lv = outputs["mean"].astype(np.float64), outputs["logvar"].astype(np.float64)
  kl = 0.5 * (np.exp(lv) + m**2 - 1 - lv).sum(axis=1)
  chex.assert_trees_all_close(terms, {"mse": mse.astype(np.float32), "kl": kl.astype(np.float32)}, rtol=1e-5)
  chex.assert_trees_all_close(total, (mse + 0.5 * kl).astype(np.float32), rtol=1e-5)


def test_make_objective_zero_weight_reports_but_does_not_optimise():
  """A weight-0 term is reported in `terms` but contributes neither to the total nor to its gradient."""
  outputs, batch = _outputs_and_batch()
  objective = losses.make_objective({"mse": 1.0, "l1": 0.0})
  total, terms = jax.jit(objective)(outputs, batch, jnp.int32(0))
  assert "l1" in terms and np.all(np.asarray(terms["l1"]) > 0)
  chex.assert_trees_all_close(total, terms["mse"], rtol=1e-6)
  grad = jax.jit(jax.grad(lambda r: objective({**outputs, "recon": r}, batch, 0)[0].sum()))(outputs["recon"])
  expected = 2.0 * (outputs["recon"] - batch["x"]) / 16
  chex.assert_trees_all_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_make_objective_weight_schedule():
  """A callable weight is evaluated at the step: weight(s) = s / 10 scales kl by 0, 0.5, 1 at s = 0, 5, 10."""
  outputs, batch = _outputs_and_batch()
  objective = jax.jit(losses.make_objective({"mse": 1.0, "kl": lambda s: s / 10}))
  for step in (0, 5, 10):
    total, terms = objective(outputs, batch, jnp.int32(step))
    chex.assert_trees_all_close(total, terms["mse"] + (step / 10) * terms["kl"], rtol=1e-6)
  total0, terms0 = objective(outputs, batch, jnp.int32(0))
  total10, _ = objective(outputs, batch, jnp.int32(10))
  assert not np.allclose(total0, total10)  # the schedule is really read, not frozen at trace time
  chex.assert_trees_all_close(total0, terms0["mse"], rtol=1e-6)


@pytest.mark.parametrize(
  "typo,closest", [("mes", "mse"), ("gausian_nll", "gaussian_nll"), ("bernoulli", "bernoulli_nll")]
)
def test_make_objective_unknown_name_suggests_closest(typo, closest):
  """An unknown term name raises ValueError naming the closest registered term."""
  with pytest.raises(ValueError, match=f"'{typo}'.*did you mean '{closest}'"):
    losses.make_objective({"mse": 1.0, typo: 1.0})


def test_make_objective_unknown_name_without_close_match_lists_terms():
  """With no close match the error has no 'did you mean' but lists the registered terms."""
  with pytest.raises(ValueError, match="registered loss terms: .*'mse'") as info:
    losses.make_objective({"zzzzzz": 1.0})
  assert "did you mean" not in str(info.value)


def test_make_objective_missing_model_output_raises_key_error():
  """A term whose model output is absent raises KeyError naming the missing output and the term."""
  objective = losses.make_objective({"mse": 1.0, "kl": 1.0})
  outputs, batch = _outputs_and_batch()
  del outputs["logvar"]
  with pytest.raises(KeyError, match=r"'kl'.*'logvar'"):
    objective(outputs, batch, 0)
  del outputs["recon"]
  with pytest.raises(KeyError, match=r"'mse'.*'recon'"):
    objective(outputs, batch, 0)


def test_make_objective_empty_raises():
  """An empty weights mapping raises ValueError."""
  with pytest.raises(ValueError, match="empty"):
    losses.make_objective({})


# ----------------------------------------------------------------------------- constants, batch terms


def test_register_declares_the_constants_a_term_reads():
  """register(name, constants=...) records them; needed_constants collects them for a config's names."""
  name = "test_scaled_mse"

  @losses.register(name, constants=("test_scale",))
  def scaled(outputs, batch):
    return losses.mse(outputs["recon"], batch["x"]) * batch["test_scale"]

  try:
    assert losses.needed_constants([name, "mse"]) == {"test_scale"}
    assert losses.needed_constants(["nmse"]) == {"data_variance"}
    assert losses.needed_constants(["mse", "kl", "not_a_term"]) == frozenset()
    outputs, batch = _outputs_and_batch()
    total, _ = jax.jit(losses.make_objective({name: 1.0}, {"test_scale": 3.0}))(outputs, batch, 0)
    expected = jax.jit(lambda o, b: 3.0 * losses.mse(o["recon"], b["x"]))(outputs, batch)
    chex.assert_trees_all_close(total, expected, rtol=1e-6)
  finally:
    losses.LOSSES.unregister(name)


def test_batch_level_terms_on_one_device_are_the_divergence_estimators():
  """Without a device axis the terms see the local batch as the global one: mmd_imq is divergences.mmd_terms,
  tc_mi + tc + tc_dwkl is the sampled KL; missing inputs raise errors naming them."""
  b, d = 6, 3
  z, prior, mean = (RNG.normal(size=(b, d)).astype(np.float32) for _ in range(3))
  logvar = RNG.normal(scale=0.3, size=(b, d)).astype(np.float32)
  outputs = {"z": z, "prior_z": prior, "mean": mean, "logvar": logvar}
  batch = {"x": np.zeros((b, 2), np.float32), "dataset_size": 50}
  expected = jax.jit(divergences.mmd_terms)(z, prior, z, prior, np.arange(b))
  mmd_imq = jax.jit(lambda o: losses.LOSSES["mmd_imq"](o, batch))(outputs)
  chex.assert_trees_all_close(mmd_imq, expected, rtol=1e-6)
  tc = jax.jit(lambda o: sum(losses.LOSSES[n](o, batch) for n in ("tc_mi", "tc", "tc_dwkl")))(outputs)
  log_ratio = jax.jit(
    lambda z, mean, logvar: (
      divergences.normal_logpdf(z, mean, logvar).sum(-1) - divergences.standard_normal_logpdf(z)
    )
  )(z, mean, logvar)
  chex.assert_trees_all_close(tc, log_ratio, rtol=1e-5, atol=1e-5)
  with pytest.raises(KeyError, match="'tc'.*dataset_size"):
    losses.LOSSES["tc"](outputs, {"x": batch["x"]})
  with pytest.raises(KeyError, match="'mmd_rbf'.*'prior_z'"):
    losses.LOSSES["mmd_rbf"]({"z": z}, batch)
  with pytest.raises(ValueError, match=r"\[batch, latent\]"):
    losses.LOSSES["mmd_imq"]({**outputs, "z": z[:, None]}, batch)
