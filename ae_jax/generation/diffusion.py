"""Flow matching (rectified flow) over continuous codes: the noising path, the regression target and the
deterministic ODE sampler of the `diffusion_prior` (denoisers.py).

Data x0 (standardised codes) and noise eps ~ N(0, I) are joined by the straight path

    x_t = (1 - t) x0 + t eps,   t in [0, 1]       (t = 0: data, t = 1: noise)

so x_t | x0 ~ N((1 - t) x0, t^2 I) (`noise`, `path_moments`). A network v(x_t, t) regresses the path's
velocity dx_t/dt = eps - x0 (`flow_loss`: the per-example mean squared error, Lipman et al. 2023, Liu et al.
2023); its minimiser is E[eps - x0 | x_t], the velocity field whose ODE dx/dt = v(x, t), run from t = 1
(x ~ N(0, I)) to t = 0, carries N(0, I) onto the data law (`sample_ode`: Euler or Heun on `steps` uniform
steps, one `lax.fori_loop`). `gaussian_velocity` is that field in closed form for data N(mu, diag(s^2)),
where the exact ODE solution is x_t = (1 - t) mu + sqrt((1 - t)^2 s^2 + t^2) z: the tests' reference.

Flow matching rather than DDPM/DDIM: one loss with no noise schedule to choose, straight paths that a
second-order solver integrates well in few steps, and a closed-form velocity for Gaussian data.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

SOLVERS = ("euler", "heun")


def noise(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = (1 - t) x0 + t eps for x0, eps [B, ...] and t [B] (broadcast over the other axes)."""
  t = t.reshape(t.shape + (1,) * (x0.ndim - t.ndim))
  return (1.0 - t) * x0 + t * eps


def path_moments(x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean, variance) of x_t given x0: ((1 - t) x0, t^2), shaped as `noise`'s output."""
  t = t.reshape(t.shape + (1,) * (x0.ndim - t.ndim))
  return (1.0 - t) * x0, jnp.broadcast_to(t**2, x0.shape)


def flow_loss(velocity: jax.Array, x0: jax.Array, eps: jax.Array) -> jax.Array:
  """The per-example mean over the code's elements of (velocity - (eps - x0))^2: [B] float32."""
  err = jnp.square(velocity.astype(jnp.float32) - (eps - x0).astype(jnp.float32))
  return jnp.mean(err.reshape(err.shape[0], -1), axis=-1)


def sample_ode(
  velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
  x1: jax.Array,
  steps: int,
  solver: str = "heun",
) -> jax.Array:
  """Integrates dx/dt = velocity_fn(x, t [B]) from t = 1 (x1 [B, ...], noise) to t = 0 on `steps` uniform
  steps t_i = 1 - i / steps: Euler (`steps` evaluations) or Heun (its trapezoidal corrector, 2 * steps).
  Returns x_0 [B, ...] (float32); deterministic: the same x1 gives the same result."""
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  x1 = jnp.asarray(x1, jnp.float32)
  batch = x1.shape[0]
  h = -1.0 / steps

  def times(i: jax.Array) -> jax.Array:
    return jnp.full((batch,), 1.0 - i / steps, jnp.float32)

  def step(i: jax.Array, x: jax.Array) -> jax.Array:
    t, t_next = times(i), times(i + 1)
    v = velocity_fn(x, t).astype(jnp.float32)
    euler = x + h * v
    if solver == "euler":
      return euler
    v_next = velocity_fn(euler, t_next).astype(jnp.float32)
    return x + 0.5 * h * (v + v_next)

  return jax.lax.fori_loop(0, steps, step, x1)


def gaussian_velocity(mu: jax.Array, s: jax.Array) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The exact velocity E[eps - x0 | x_t = x] for data x0 ~ N(mu, diag(s^2)) (mu, s broadcast against x
  [B, ...]): -mu + (t - (1 - t) s^2) / ((1 - t)^2 s^2 + t^2) (x - (1 - t) mu)."""
  mu, s2 = jnp.asarray(mu, jnp.float32), jnp.square(jnp.asarray(s, jnp.float32))

  def velocity(x: jax.Array, t: jax.Array) -> jax.Array:
    t = t.reshape(t.shape + (1,) * (x.ndim - t.ndim))
    var = (1.0 - t) ** 2 * s2 + t**2
    return -mu + (t - (1.0 - t) * s2) / var * (x - (1.0 - t) * mu)

  return velocity
