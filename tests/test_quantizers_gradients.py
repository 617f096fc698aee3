"""Which parameters each quantiser's terms move, behind a one-layer "encoder": the codebook and commitment
terms compare the codes with the quantiser's input before substitution, so the codebook term moves only
codes and the commitment term only what produced the input; the output's gradient reaches the encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from ae_jax import quantizers as q

D, K = 4, 8


class Encoded(nn.Module):
  """x [B, P, 3] -> Dense "encoder" -> the quantiser (its parameters under "quantizer")."""

  quantizer: nn.Module

  @nn.compact
  def __call__(self, x):
    return self.quantizer(nn.Dense(D, name="encoder")(x), train=True)


# quantiser -> {term: the parameters its gradient reaches}; entropy temperature 1: at the default 0.01 the
# softmax over these unit-scale distances is one-hot in float32 and passes no gradient at all
CASES = {
  "vq_trained": (
    lambda: q.VectorQuantizer(K, D, ema=False, entropy_temperature=1.0),
    {
      "codebook_loss": {"codebook"},
      "commitment_loss": {"encoder"},
      "quantized": {"encoder"},
      "code_entropy": {"encoder", "codebook"},
    },
  ),
  "vq_ema": (
    lambda: q.VectorQuantizer(K, D, entropy_temperature=1.0),
    {
      "codebook_loss": set(),
      "commitment_loss": {"encoder"},
      "quantized": {"encoder"},
      "code_entropy": {"encoder"},
    },
  ),
  "vq_cosine_lowdim_rotation": (
    lambda: q.VectorQuantizer(
      K, D, ema=False, cosine=True, codebook_dim=3, gradient="rotation", entropy_temperature=1.0
    ),
    {
      "codebook_loss": {"codebook"},
      "commitment_loss": {"encoder", "project_in"},
      "quantized": {"encoder", "project_in", "project_out"},
      "code_entropy": {"encoder", "project_in", "codebook"},
    },
  ),
  "rvq_trained": (
    lambda: q.ResidualVectorQuantizer(
      K, D, num_stages=2, ema=False, quantizer_dropout=True, entropy_temperature=1.0
    ),
    {
      "codebook_loss": {"codebook"},
      "commitment_loss": {"encoder"},
      "quantized": {"encoder"},
      "code_entropy": {"encoder", "codebook"},
    },
  ),
  "lfq": (
    lambda: q.LookupFreeQuantizer(D, entropy_temperature=0.5),
    {
      "codebook_loss": set(),
      "commitment_loss": {"encoder"},
      "quantized": {"encoder"},
      "lfq_entropy": {"encoder"},
    },
  ),
  "gumbel": (
    lambda: q.GumbelQuantizer(K, D, entropy_temperature=1.0),
    {
      "codebook_loss": set(),
      "commitment_loss": set(),
      "quantized": {"encoder", "logits", "codebook"},
      "gumbel_kl": {"encoder", "logits"},
      "code_entropy": {"encoder", "logits"},
    },
  ),
  "fsq": (
    lambda: q.FiniteScalarQuantizer((3, 3, 3, 3)),
    {"codebook_loss": set(), "commitment_loss": set(), "quantized": {"encoder"}},
  ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_term_reaches_exactly_its_parameters(case):
  make, expected = CASES[case]
  model = Encoded(make())
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 3)), jnp.float32)
  rngs = {"params": jax.random.PRNGKey(0), "sample": jax.random.PRNGKey(1)}
  variables = jax.jit(model.init)(rngs, x)
  state = {k: v for k, v in variables.items() if k != "params"}
  w = jnp.asarray(np.random.default_rng(1).normal(size=(4, 6, D)), jnp.float32)

  @jax.jit
  def grads(params):
    def term(name, params):
      out, _ = model.apply({"params": params, **state}, x, rngs=rngs, mutable=list(state))
      return jnp.sum(w * out[name]) if name == "quantized" else jnp.sum(out[name])

    return {name: jax.grad(lambda p, n=name: term(n, p))(params) for name in expected}

  for name, g in grads(variables["params"]).items():
    reached = {
      path[0].key if path[0].key == "encoder" else path[1].key
      for path, leaf in jax.tree_util.tree_flatten_with_path(g)[0]
      if np.abs(np.asarray(leaf)).max() > 0
    }
    assert reached == expected[name], (case, name, reached)
