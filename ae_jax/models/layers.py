"""Building blocks shared by several model families."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "relu": nn.relu,
  "tanh": jnp.tanh,
  "sigmoid": nn.sigmoid,
  "gelu": nn.gelu,
  "elu": nn.elu,
  "identity": lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation by name, with an error that lists the valid names."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def check_input_shape(model: str, x: jax.Array, expected: Sequence[int], hint: str = "") -> None:
  """Raises one clear ValueError when `x` [batch, *expected] has the wrong per-example shape."""
  if tuple(x.shape[1:]) != tuple(expected):
    raise ValueError(
      f"{model} expects inputs of shape [batch, {', '.join(map(str, expected))}] but got "
      f"{list(x.shape)}; {hint or 'set config.model.input_shape to the data shape'}"
    )
