"""The `diffusion_prior` model: a flow-matching prior over a frozen autoencoder's or VAE's standardised
continuous codes (the `latent_codes` dataset), and its denoisers.

    x [B, *code_shape] float32 -> {"velocity", "flow_mse" [B], "metrics": {}}

Training draws, per example, t ~ U[0, 1) and eps ~ N(0, I) from the "sample" rng stream, noises the code
(`diffusion.noise`) and regresses the path's velocity eps - x with the per-example mean squared error, the
`flow_mse` loss term (evaluation draws them the same way from the evaluator's key). `velocity(x_t, t)` is
the network alone, what the ODE sampler (`diffusion.sample_ode`, `draw_codes`) integrates.

Denoisers (`denoiser`; "auto": "transformer" for a spatial code [h, w, c], "mlp" otherwise):
* `ResidualMLP`: the flattened code -> Dense(width), `num_layers` pre-LayerNorm residual blocks (LN, FiLM
  of the time embedding, Dense(2 width), SiLU, Dense(width)), LN, Dense(D) initialised at zero.
* `PositionTransformer`: one token per grid position (Dense(width) of its c channels, plus a learned
  position embedding and the time embedding), the bidirectional trunk of `ae_jax.generation.trunk`
  (`num_layers` blocks, `num_heads`, MLP 4 width), Dense(c) per position initialised at zero.
The time embedding is sinusoidal in 1000 t (Vaswani et al.; DDPM's), then Dense(width), SiLU, Dense(width).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ae_jax import losses
from ae_jax.core.errors import ConfigError
from ae_jax.generation import diffusion
from ae_jax.generation.trunk import Transformer
from ae_jax.models import interface

DENOISERS = ("auto", "mlp", "transformer")


def time_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal features [B, dim] of t [B] in [0, 1] (scaled by 1000): cos then sin of 1000 t at `dim` / 2
  frequencies from 1 down to 1 / max_period."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimeMLP(nn.Module):
  """t [B] -> [B, width]: the sinusoidal features, Dense(width), SiLU, Dense(width)."""

  width: int

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    h = nn.Dense(self.width, name="in")(time_embedding(t, max(self.width // 2, 32) * 2))
    return nn.Dense(self.width, name="out")(nn.silu(h))


class ResidualMLP(nn.Module):
  """(x [B, ...], t [B]) -> velocity [B, ...] through the flattened code (module docstring)."""

  width: int
  num_layers: int

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
    flat = x.reshape(x.shape[0], -1)
    temb = nn.silu(TimeMLP(self.width, name="time")(t))
    h = nn.Dense(self.width, name="in")(flat)
    for i in range(self.num_layers):
      y = nn.LayerNorm(use_scale=False, use_bias=False, name=f"ln_{i}")(h)
      film = nn.Dense(2 * self.width, kernel_init=nn.initializers.zeros, name=f"film_{i}")(temb)
      scale, shift = jnp.split(film, 2, axis=-1)
      y = y * (1.0 + scale) + shift
      y = nn.Dense(2 * self.width, name=f"mlp_in_{i}")(y)
      h = h + nn.Dense(self.width, name=f"mlp_out_{i}")(nn.silu(y))
    out = nn.Dense(flat.shape[-1], kernel_init=nn.initializers.zeros, name="out")(nn.LayerNorm(name="ln")(h))
    return out.reshape(x.shape)


class PositionTransformer(nn.Module):
  """(x [B, h, w, c], t [B]) -> velocity [B, h, w, c], a token per grid position (module docstring)."""

  width: int
  num_layers: int
  num_heads: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, *, train: bool) -> jax.Array:
    b, channels = x.shape[0], x.shape[-1]
    tokens = x.reshape(b, -1, channels)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (tokens.shape[1], self.width), jnp.float32)
    h = nn.Dense(self.width, name="in")(tokens) + pos + TimeMLP(self.width, name="time")(t)[:, None]
    h = Transformer(self.num_layers, self.num_heads, 4 * self.width, False, self.dropout, name="trunk")(
      h, train=train
    )
    return nn.Dense(channels, kernel_init=nn.initializers.zeros, name="out")(h).reshape(x.shape)


@interface.register("diffusion_prior", ("code_flow",))
class DiffusionPrior(nn.Module):
  """Flow-matching prior over standardised continuous codes x [B, *code_shape] (module docstring).

  denoiser: "auto", "mlp" or "transformer"; width, num_layers, num_heads (transformer), dropout
  (transformer); solver: the ODE solver the sampler uses ("heun" or "euler")."""

  input_shape: Sequence[int] = (16,)
  denoiser: str = "auto"
  width: int = 512
  num_layers: int = 4
  num_heads: int = 4
  dropout: float = 0.0
  solver: str = "heun"

  objective = "flow_mse"
  sampling_options = ("steps",)  # generate.SampleOptions' fields it reads: ODE steps

  @property
  def kind(self) -> str:
    """The denoiser "auto" resolves to for this code shape."""
    if self.denoiser != "auto":
      return self.denoiser
    return "transformer" if len(self.input_shape) == 3 else "mlp"

  def setup(self) -> None:
    if self.denoiser not in DENOISERS:
      raise ConfigError(f"config.model.denoiser must be one of {list(DENOISERS)}, got '{self.denoiser}'")
    if self.solver not in diffusion.SOLVERS:
      raise ConfigError(f"config.model.solver must be one of {list(diffusion.SOLVERS)}, got '{self.solver}'")
    if self.kind == "transformer" and len(self.input_shape) != 3:
      raise ConfigError(
        f"the transformer denoiser reads spatial codes [h, w, c]; these codes have shape "
        f"{list(self.input_shape)}: use config.model.denoiser='mlp'"
      )
    if self.kind == "transformer":
      self.net = PositionTransformer(self.width, self.num_layers, self.num_heads, self.dropout, name="net")
    else:
      self.net = ResidualMLP(self.width, self.num_layers, name="net")

  def velocity(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
    """The predicted velocity [B, *code_shape] float32 at noised codes x [B, *code_shape] and times t [B]."""
    x = x.astype(jnp.float32)
    if self.kind == "transformer":
      return self.net(x, t, train=train).astype(jnp.float32)
    return self.net(x, t).astype(jnp.float32)

  def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
    x0 = x.astype(jnp.float32)
    t_key, eps_key = jax.random.split(self.make_rng("sample"))
    t = jax.random.uniform(t_key, (x0.shape[0],), jnp.float32)
    eps = jax.random.normal(eps_key, x0.shape, jnp.float32)
    velocity = self.velocity(diffusion.noise(x0, eps, t), t, train)
    return {"velocity": velocity, "flow_mse": diffusion.flow_loss(velocity, x0, eps), "metrics": {}}


def draw_codes(model: DiffusionPrior, variables, noise: jax.Array, steps: int) -> jax.Array:
  """Standardised codes [B, *code_shape] from noise [B, *code_shape] (N(0, I)): the ODE of the model's
  velocity from t = 1 to 0 in `steps` steps of its solver (`diffusion.sample_ode`); jittable."""
  fn = lambda x, t: model.apply(variables, x, t, method="velocity")  # noqa: E731
  return diffusion.sample_ode(fn, noise, steps, model.solver)


@losses.register("flow_mse")
def _flow_mse_term(outputs: losses.Outputs, batch: losses.Batch) -> jax.Array:
  """Flow matching's velocity regression: the per-example mean squared error over the code's elements."""
  return losses.require_output(outputs, "flow_mse", "flow_mse")
