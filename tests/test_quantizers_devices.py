"""Every quantiser on 8 devices holds and reports exactly what it does on 1 device over the same global
batch: state (codebooks, EMA statistics, seeded and re-seeded codes, Gumbel's step), indices, per-example
terms, usage metrics and the gradient of the batch-level terms; each device holds the same copy; and each
state collection survives a checkpoint round trip."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import quantizers as q
from ae_jax.core import parallel
from ae_jax.training import checkpoint, train

AXIS = parallel.AXIS
D, K = 4, 8
TERMS = ("codebook_loss", "commitment_loss", "code_entropy", "lfq_entropy", "gumbel_kl")

# entropy temperature 0.5: well-conditioned entropy gradients, compared at float32 tolerances
COMMON = dict(entropy_temperature=0.5, axis_name=AXIS)
CASES = {
  "vq_ema_kmeans_reseed": lambda: q.VectorQuantizer(
    K, D, codebook_init="kmeans++", decay=0.5, dead_code_threshold=6.0, **COMMON
  ),
  "vq_cosine_lowdim_ema": lambda: q.VectorQuantizer(
    K,
    D,
    codebook_init="random_data",
    decay=0.5,
    dead_code_threshold=6.0,
    cosine=True,
    codebook_dim=3,
    **COMMON,
  ),
  "vq_trained_rotation": lambda: q.VectorQuantizer(K, D, ema=False, gradient="rotation", **COMMON),
  "rvq_ema_dropout": lambda: q.ResidualVectorQuantizer(
    K,
    D,
    num_stages=2,
    codebook_init="kmeans++",
    decay=0.5,
    dead_code_threshold=6.0,
    quantizer_dropout=True,
    **COMMON,
  ),
  "rvq_shared_trained": lambda: q.ResidualVectorQuantizer(
    K, D, num_stages=2, shared_codebook=True, ema=False, quantizer_dropout=True, **COMMON
  ),
  "lfq": lambda: q.LookupFreeQuantizer(D, **COMMON),
  "gumbel": lambda: q.GumbelQuantizer(K, D, anneal_steps=4, **COMMON),
  "fsq": lambda: q.FiniteScalarQuantizer((3, 3, 4, 5), axis_name=AXIS),
}


def _batches(steps=3, batch=16):
  rng = np.random.default_rng(0)
  return [rng.normal(size=(batch, 2, 2, D)).astype(np.float32) for _ in range(steps)]


def _init(module, z):
  """Variables of `module`, compiled without XLA optimisation (as the trainer does: random initialisers and
  threefry keys compile slowly when optimised)."""
  init = parallel.with_named_axis(lambda r, z: module.init(r, z, train=False))
  return train.run_once(init, {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}, z)


def _quick_pmap(fn, devices, *args):
  """jax.pmap(fn) compiled once without XLA's backend optimisation, for tiny test steps."""
  lowered = jax.pmap(fn, axis_name=AXIS, devices=devices).lower(*args)
  return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})


def _loss(out):
  """Every per-example term the quantiser gives, plus a fixed linear function of its output."""
  total = sum(out[t].mean() for t in TERMS if t in out)
  return total + jnp.mean(out["quantized"] * jnp.linspace(-1.0, 1.0, out["quantized"].shape[-1]))


def _step(variables, z, key, *, module):
  """One training application on this device's share, with this device's key (as the trainer folds in its
  index); the state is not averaged over devices, so its copies can be compared."""
  rngs = {"sample": jax.random.fold_in(key, jax.lax.axis_index(AXIS))}
  mutable = [c for c in variables if c != "params"]

  def loss(z):
    out, state = module.apply(variables, z, train=True, rngs=rngs, mutable=mutable)
    return _loss(out), (out, state)

  (_, (out, state)), grad = jax.value_and_grad(loss, has_aux=True)(z)
  return {**variables, **state}, out, grad


@functools.cache
def _run(case, num_devices):
  """(initial variables, [per-device variables after each step], [outputs in global order], [grads])."""
  module, batches = CASES[case](), _batches()
  devices = jax.local_devices()[:num_devices]
  variables = _init(module, batches[0][:2])
  rvars, states, outs, grads = parallel.replicate(variables, devices), [], [], []
  shard = lambda z: parallel.shard(z.reshape(num_devices, -1, *z.shape[1:]), devices)
  keys = [parallel.replicate(jax.random.PRNGKey(10 + i), devices) for i in range(len(batches))]
  p_step = _quick_pmap(functools.partial(_step, module=module), devices, rvars, shard(batches[0]), keys[0])
  for z, key in zip(batches, keys, strict=True):
    rvars, out, grad = p_step(rvars, shard(z), key)
    states.append(jax.device_get(rvars))
    merge = lambda x: x.reshape(-1, *x.shape[2:]) if x.ndim >= 2 else x
    outs.append(
      jax.device_get(
        {**jax.tree.map(merge, {k: v for k, v in out.items() if k != "metrics"}), "metrics": out["metrics"]}
      )
    )
    grads.append(np.asarray(jax.device_get(grad)).reshape(-1, *z.shape[1:]))
  return jax.device_get(variables), states, outs, grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_eight_devices_hold_and_report_what_one_device_does(case, tmp_path):
  initial, s8, o8, g8 = _run(case, 8)
  _, s1, o1, g1 = _run(case, 1)
  for step, (a, b) in enumerate(zip(s8, s1, strict=True)):
    state8 = {k: v for k, v in a.items() if k != "params"}
    for leaf in jax.tree.leaves(state8):  # every device holds the same copy
      np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[:1], leaf.shape), err_msg=f"step {step}")
    chex.assert_trees_all_close(
      jax.tree.map(lambda x: x[0], state8),
      jax.tree.map(lambda x: x[0], {k: b[k] for k in state8}),
      rtol=1e-5,
      atol=1e-6,
    )
  for a, b in zip(o8, o1, strict=True):
    np.testing.assert_array_equal(a["indices"], b["indices"])
    for key in TERMS:
      if key in b:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for key, value in b["metrics"].items():
      np.testing.assert_allclose(a["metrics"][key], np.full(8, value[0]), rtol=1e-5, atol=1e-6, err_msg=key)
  for a, b in zip(g8, g1, strict=True):  # d(sum of the devices' losses) = 8 d(global mean)
    np.testing.assert_allclose(a / 8, b, rtol=1e-4, atol=1e-6)

  state = {k: v for k, v in jax.tree.map(lambda x: x[0], s8[-1]).items() if k != "params"}
  if "codes_reseeded" in o1[0]["metrics"]:
    assert sum(float(o["metrics"]["codes_reseeded"][0]) for o in o1) > 0  # the threshold did re-seed
  if not state:
    assert case in ("lfq", "fsq", "vq_trained_rotation", "rvq_shared_trained")
    return
  assert not all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves({k: initial[k] for k in state}), strict=True)
  )
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False)
  ckpt.save(3, state, {})
  template = {k: initial[k] for k in state}
  restored = ckpt.restore(3, template, {})
  ckpt.close()
  chex.assert_trees_all_equal(jax.device_get(restored), state)
