"""Optimizer and learning-rate schedule from `config.optimizer` (optax)."""

from __future__ import annotations

import ml_collections
import optax


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning rate per step: constant, cosine decay, or linear warm-up then cosine decay."""
  lr, warmup = float(cfg.learning_rate), int(cfg.warmup_steps)
  if cfg.schedule == "constant":
    if warmup:
      return optax.linear_schedule(0.0, lr, warmup)
    return optax.constant_schedule(lr)
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
  raise ValueError(
    f"unknown config.optimizer.schedule '{cfg.schedule}'; choose constant, cosine or warmup_cosine"
  )


def make_optimizer(
  cfg: ml_collections.ConfigDict, total_steps: int, freeze: tuple[str, ...] = ()
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) for adam / adamw / sgd, with optional global-norm clipping."""
  if freeze:
    raise NotImplementedError("config.freeze is not implemented yet")
  schedule = make_schedule(cfg, total_steps)
  if cfg.name == "adam":
    tx = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  elif cfg.name == "sgd":
    tx = optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
  else:
    raise ValueError(f"unknown config.optimizer.name '{cfg.name}'; choose adam, adamw or sgd")
  if cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
