"""Optimizer and learning-rate schedule from `config.optimizer` (optax)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

from ae_jax.core.errors import ConfigError, did_you_mean

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "piecewise")


def check_options(cfg: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a config.optimizer that make_optimizer cannot build (checked before any data is
  read): an unknown name or schedule (naming the closest), or piecewise boundaries that do not fit scales."""
  for key, choices in (("name", OPTIMIZERS), ("schedule", SCHEDULES)):
    value = str(cfg[key])
    if value not in choices:
      raise ConfigError(
        f"unknown config.optimizer.{key} '{value}'; {did_you_mean(value, choices)}choose "
        f"{', '.join(choices[:-1])} or {choices[-1]}"
      )
  if int(cfg.warmup_steps) < 0:
    raise ConfigError(f"config.optimizer.warmup_steps must be >= 0, got {cfg.warmup_steps}")
  if cfg.schedule == "piecewise":
    boundaries, scales = list(cfg.boundaries), list(cfg.scales)
    if len(scales) != len(boundaries) + 1:
      raise ConfigError(
        f"config.optimizer.scales needs one entry more than boundaries: {len(scales)} vs {len(boundaries)}"
      )
    if any(b <= a for a, b in zip(boundaries, boundaries[1:], strict=False)) or any(
      b <= 0 for b in boundaries
    ):
      raise ConfigError(
        f"config.optimizer.boundaries must be positive and increasing, got {tuple(boundaries)}"
      )


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning rate per step: constant, cosine decay, linear warm-up then cosine decay, or piecewise."""
  check_options(cfg)
  lr, warmup = float(cfg.learning_rate), int(cfg.warmup_steps)
  if cfg.schedule == "constant":
    if warmup:
      return optax.linear_schedule(0.0, lr, warmup)
    return optax.constant_schedule(lr)
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
  if cfg.schedule == "piecewise":
    # lr * scales[i] from step boundaries[i - 1] on (scales are absolute multipliers of learning_rate).
    values = [lr * s for s in cfg.scales]
    return optax.join_schedules([optax.constant_schedule(v) for v in values], list(cfg.boundaries))
  raise AssertionError(f"schedule {cfg.schedule!r} passed check_options but has no implementation")


def param_path(path: tuple) -> str:
  """'/'-joined names of a pytree key path, e.g. 'encoder/layer_0/kernel'."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def freeze_labels(patterns: tuple[str, ...]) -> Callable[[Any], Any]:
  """optax.multi_transform labels: "frozen" where a pattern fullmatches the path, else "trainable".

  Raises ValueError for an invalid regex right away and, when applied to the params (at `tx.init`), for a
  pattern that matches no parameter, naming the pattern and some real parameter paths.
  """
  compiled = []
  for pattern in patterns:
    try:
      compiled.append(re.compile(pattern))
    except re.error as e:
      raise ValueError(f"config.freeze pattern {pattern!r} is not a valid regex: {e}") from None

  def label_fn(params: Any) -> Any:
    paths = jax.tree_util.tree_map_with_path(lambda path, _: param_path(path), params)
    names = jax.tree.leaves(paths)
    for regex in compiled:
      if not any(regex.fullmatch(name) for name in names):
        raise ValueError(
          f"config.freeze pattern {regex.pattern!r} matches no parameter path (it must match a whole path); "
          f"the paths look like: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}"
        )
    return jax.tree.map(
      lambda name: "frozen" if any(r.fullmatch(name) for r in compiled) else "trainable", paths
    )

  return label_fn


def trainable_mask(patterns: tuple[str, ...]) -> Callable[[Any], Any] | None:
  """params -> pytree of bools (False where a freeze pattern fullmatches the path); None without patterns."""
  if not patterns:
    return None
  labels = freeze_labels(tuple(patterns))
  return lambda params: jax.tree.map(lambda label: label == "trainable", labels(params))


def make_optimizer(
  cfg: ml_collections.ConfigDict, total_steps: int, freeze: tuple[str, ...] = ()
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) for adam / adamw / sgd, with optional global-norm clipping.

  Parameters whose '/'-joined path fullmatches a regex in `freeze` get zero updates and no optimizer state;
  clipping and weight decay see only the trainable ones.
  """
  schedule = make_schedule(cfg, total_steps)
  if cfg.name == "adam":
    tx = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  elif cfg.name == "sgd":
    tx = optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
  else:
    raise AssertionError(f"optimizer {cfg.name!r} passed check_options but has no implementation")
  if cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  if freeze:
    tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, freeze_labels(tuple(freeze)))
  return tx, schedule
