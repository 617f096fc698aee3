"""The rotation trick: the forward value is the code exactly, and the encoder's gradient is the decoder's
rotated and rescaled by the closed form |q|/|e| R."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ae_jax import quantizers as q

RNG = np.random.default_rng(0)


def _closed_form(e, c):
  """|q|/|e| R with R = I - 2 r r^T + 2 q^ e^T, r = (e^ + q^)/|e^ + q^|, in float64."""
  e, c = np.asarray(e, np.float64), np.asarray(c, np.float64)
  e_hat, q_hat = e / np.linalg.norm(e), c / np.linalg.norm(c)
  r = (e_hat + q_hat) / np.linalg.norm(e_hat + q_hat)
  rotation = np.eye(e.size) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, e_hat)
  return np.linalg.norm(c) / np.linalg.norm(e) * rotation, rotation, e_hat, q_hat


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_gradient_is_the_rotation_and_rescaling_in_closed_form(dim):
  jacobian_of = jax.jit(jax.jacobian(q.rotation_trick))
  code_grad = jax.jit(jax.grad(lambda x, y: jnp.sum(q.rotation_trick(x, y)), argnums=1))
  for _ in range(3):
    e, c = (RNG.normal(size=dim).astype(np.float32) for _ in range(2))
    c = c * 2.5  # a code of another norm: the rescaling shows
    jacobian = jacobian_of(e, c)
    expected, rotation, e_hat, q_hat = _closed_form(e, c)
    np.testing.assert_allclose(jacobian, expected, rtol=1e-4, atol=1e-5)
    # R is a rotation taking e^ to q^ (orthogonal, determinant 1)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(dim), atol=1e-10)
    np.testing.assert_allclose(rotation @ e_hat, q_hat, atol=1e-10)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-10)
    # no gradient reaches the code through the output
    g_code = code_grad(e, c)
    np.testing.assert_array_equal(g_code, 0.0)


def test_forward_value_is_the_code_exactly():
  z_e = RNG.normal(size=(64, 6)).astype(np.float32)
  z_q = RNG.normal(size=(64, 6)).astype(np.float32)
  z_q[0] = z_e[0]  # the code equal to the input: R = I
  z_q[1] = -3 * z_e[1]  # opposite directions
  np.testing.assert_array_equal(jax.jit(q.rotation_trick)(z_e, z_q), z_q)
  jacobian = jax.jit(jax.jacobian(lambda x: q.rotation_trick(x, z_q[0])))(z_e[0])
  np.testing.assert_allclose(jacobian, np.eye(6), atol=1e-5)


def test_vector_quantize_with_rotation_rotates_each_vectors_gradient():
  """gradient="rotation": the value is each vector's nearest code; the gradient of each output vector is
  the closed form for that vector and its code; the loss terms are those of the straight-through VQ."""
  z_e = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  codebook = RNG.normal(size=(7, 4)).astype(np.float32)
  rot, st = jax.jit(lambda z, c: (q.vector_quantize(z, c, gradient="rotation"), q.vector_quantize(z, c)))(
    z_e, codebook
  )
  np.testing.assert_array_equal(rot.quantized, codebook[rot.indices])
  np.testing.assert_array_equal(rot.indices, st.indices)
  np.testing.assert_array_equal(rot.commitment_loss, st.commitment_loss)
  np.testing.assert_array_equal(rot.codebook_loss, st.codebook_loss)
  w = RNG.normal(size=z_e.shape).astype(np.float32)
  loss = lambda z: jnp.sum(w * q.vector_quantize(z, codebook, gradient="rotation").quantized)
  grad = np.asarray(jax.jit(jax.grad(loss))(z_e))
  for b, h in np.ndindex(2, 3):
    expected = _closed_form(z_e[b, h], codebook[rot.indices[b, h]])[0]
    np.testing.assert_allclose(grad[b, h], expected.T @ np.asarray(w[b, h]), rtol=1e-4, atol=1e-5)
  assert not np.allclose(grad, w)  # not the straight-through identity
  with pytest.raises(ValueError, match="unknown gradient estimator"):
    q.substitute(z_e, z_e, "reinforce")
