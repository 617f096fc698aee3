"""The model's outputs outside training: `reconstruct` runs a model on inputs on one device (jitted,
chunked), and `Progress` prints progress lines for the loops that take a while. Used by the evaluators
and by anomaly detection, neither of which the other imports."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import jax
import numpy as np
import tqdm
from flax import linen as nn

from ae_jax.core import parallel
from ae_jax.training.train import TrainState, apply_model

log = logging.getLogger(__name__)  # ae_jax's INFO lines reach the console (`console.setup`)

PROGRESS_AFTER_S = 5.0  # an evaluation says nothing for its first seconds ...
PROGRESS_EVERY_S = 15.0  # ... then a progress line at most this often


def _duration(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
  """Progress lines (the ae_jax logger, INFO: console and log.txt, process 0 only) for a loop over
  `total` examples, like training's progress bar: nothing while it is short, then, once it has run
  `after` seconds, at most one line every `every` seconds,

      likelihood on test: 3,000 / 10,000 examples (30%), 0m41s so far, about 1m36s left

  and a last line with its duration when it printed any. The time left extrapolates the rate since the
  first update (which includes compilation); `clock` (seconds) is replaceable for tests.
  """

  def __init__(
    self,
    what: str,
    total: int,
    *,
    after: float = PROGRESS_AFTER_S,
    every: float = PROGRESS_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.what, self.total, self.after, self.every, self.clock = what, int(total), after, every, clock
    self.start = self.last_line = clock()
    self.first: tuple[float, int] | None = None  # (time, examples) of the first update
    self.printed = False
    self.enabled = jax.process_index() == 0

  def update(self, done: int) -> None:
    """`done` of the `total` examples are evaluated."""
    now = self.clock()
    if self.first is None:
      self.first = (now, done)
      return
    if (
      not self.enabled
      or now - self.start < self.after
      or (self.printed and now - self.last_line < self.every)
    ):
      return
    t0, n0 = self.first
    left = (now - t0) / max(done - n0, 1) * (self.total - done)
    share = 100 * done // max(self.total, 1)
    so_far = _duration(now - self.start)
    self._log(f"{done:,} / {self.total:,} examples ({share}%), {so_far} so far, about {_duration(left)} left")
    self.printed, self.last_line = True, now

  def close(self) -> None:
    if self.enabled and self.printed:
      self._log(f"{self.total:,} examples in {_duration(self.clock() - self.start)}")

  def _log(self, text: str) -> None:
    # a progress bar (training's) is cleared for the line and drawn again below it
    with tqdm.tqdm.external_write_mode(file=sys.stderr):
      log.info("%s: %s", self.what, text)


def reconstruct(
  model: nn.Module, state: TrainState, x: np.ndarray, batch_size: int = 500, label: str = "reconstruction"
) -> dict[str, np.ndarray]:
  """The model's batch-first outputs for inputs x [n, ...] in evaluation mode (one device, no pmap),
  computed `batch_size` examples at a time with one jitted function (one compile: a short last chunk is
  padded with zeros, and its padding's outputs dropped).

  Outputs that are not batch-first (a VAE's sample-first [k, B] log-densities) are kept only when x fits
  in one batch. A long one logs its progress as `label` (`Progress`).
  """

  def fn(s: TrainState, x: jax.Array) -> dict[str, jax.Array]:
    outputs = apply_model(model, s.params, s.model_state, {"x": x}, train=False, rng=s.rng)[0]
    outputs.pop("metrics", None)
    return outputs

  run = jax.jit(parallel.with_named_axis(fn))
  if len(x) <= batch_size:
    return jax.device_get(run(state, x))
  chunks, sizes = [], []
  progress = Progress(label, len(x))
  for i in range(0, len(x), batch_size):
    chunk = np.asarray(x[i : i + batch_size])
    sizes.append(len(chunk))
    padding = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
    chunks.append(jax.device_get(run(state, np.concatenate([chunk, padding]))))
    progress.update(i + len(chunk))
  progress.close()
  batch_first = [k for k in chunks[0] if np.shape(chunks[0][k])[:1] == (batch_size,)]
  return {k: np.concatenate([c[k][:n] for c, n in zip(chunks, sizes, strict=True)]) for k in batch_first}
