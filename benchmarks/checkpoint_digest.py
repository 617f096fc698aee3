r"""What the checkpoint digest costs: sha256 of every array of the train state (`checkpoint.state_digest`)
against the time of the save it is part of, by state size.

    python -m benchmarks.checkpoint_digest                        # 1, 16, 128 and 512 MB states, 3 rounds
    python -m benchmarks.checkpoint_digest --sizes-mb 1,16 --rounds 2 --out DIR

Each state is a dict of float32 arrays on the default device (leaves of at most 16 MB, plus a few small
ones), saved by `checkpoint.Checkpointer` as the trainer saves (a `step` folder of state, config and
digest). How each number is measured, the median over --rounds rounds, each round a new step in a new
directory of --dir (default: a temporary directory), so nothing is cached between them:
* digest: `state_digest(state)` alone (device-to-host copy and hashing; the same work verifies a restore);
* synchronous save: `save` then `wait` with `async_save=False`, with the digest and with `state_digest`
  replaced by one that hashes nothing (the save as it was before digests);
* asynchronous save, blocking: the time `save` holds the training loop with `async_save=True` (the
  digest is computed there; the write goes on in the background), with and without the digest;
* restore: `restore` into a state of the same structure, which recomputes the digest and compares it.
Writes DIR/checkpoint_digest.{md,json} with --out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ae_jax.training import checkpoint

LEAF_MB = 16


def make_state(size_mb: float, seed: int = 0) -> dict[str, Any]:
  """A state of about `size_mb` MB: float32 leaves of at most LEAF_MB MB, a step and a key, on the device."""
  rng = np.random.default_rng(seed)
  total, leaves = int(size_mb * 2**20) // 4, {}
  i = 0
  while total > 0:
    n = min(total, LEAF_MB * 2**20 // 4)
    leaves[f"w{i}"] = jnp.asarray(rng.standard_normal(n, dtype=np.float32).reshape(-1, 64))
    total, i = total - n, i + 1
  return {"step": jnp.int32(7), "params": leaves, "rng": jnp.zeros(2, jnp.uint32)}


def _nbytes(state: Any) -> int:
  return sum(x.nbytes for x in jax.tree.leaves(state))


@contextlib.contextmanager
def _without_digest() -> Iterator[None]:
  """`state_digest` hashing nothing, as the save was before digests (the restore then cannot verify)."""
  original = checkpoint.state_digest
  checkpoint.state_digest = lambda state: {}
  try:
    yield
  finally:
    checkpoint.state_digest = original


def _timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def measure(size_mb: float, rounds: int, root: str) -> dict[str, Any]:
  """Seconds (medians over `rounds`) of the digest, the saves with and without it, and the restore."""
  state = make_state(size_mb)
  jax.block_until_ready(state)
  checkpoint.state_digest(state)  # warm up: compile nothing, but touch every page once
  times: dict[str, list[float]] = {}
  for _ in range(rounds):
    times.setdefault("digest", []).append(_timed(lambda: checkpoint.state_digest(state)))
    for name, async_save, digest in (
      ("save_sync", False, True),
      ("save_sync_no_digest", False, False),
      ("save_async_blocking", True, True),
      ("save_async_blocking_no_digest", True, False),
    ):
      ckpt = checkpoint.Checkpointer(tempfile.mkdtemp(dir=root), keep=1, async_save=async_save)
      with contextlib.nullcontext() if digest else _without_digest():
        blocking = _timed(lambda ckpt=ckpt: ckpt.save(1, state, {"model": {}}))
        ckpt.wait()
      times.setdefault(name, []).append(blocking)
      if name == "save_sync":
        restore = _timed(lambda ckpt=ckpt: ckpt.restore(1, state, {"model": {}}))
        times.setdefault("restore", []).append(restore)
      ckpt.close()
  out = {k: statistics.median(v) for k, v in times.items()}
  out["state_mb"] = _nbytes(state) / 2**20
  out["leaves"] = len(jax.tree.leaves(state))
  return out


def markdown(rows: list[dict[str, Any]]) -> str:
  """The table: per state size, the digest's time, MB/s, and its share of each save."""
  lines = [
    "| state | leaves | digest | digest MB/s | sync save (without digest) | digest / sync save | async save "
    "blocks (without digest) | restore, verified |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    ms = {k: 1000 * v for k, v in r.items() if isinstance(v, float) and k != "state_mb"}
    lines.append(
      f"| {r['state_mb']:.0f} MB | {r['leaves']} | {ms['digest']:.1f} ms | {r['state_mb'] / r['digest']:.0f} "
      f"| {ms['save_sync']:.0f} ms ({ms['save_sync_no_digest']:.0f} ms) | "
      f"{r['digest'] / r['save_sync']:.0%} | {ms['save_async_blocking']:.0f} ms "
      f"({ms['save_async_blocking_no_digest']:.0f} ms) | {ms['restore']:.0f} ms |"
    )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes-mb", default="1,16,128,512", help="state sizes in MB, comma-separated")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--dir", default=None, help="where the checkpoints are written (default: a temp dir)")
  parser.add_argument("--out", default=None, help="write checkpoint_digest.{md,json} here")
  args = parser.parse_args(argv)
  sizes = [float(s) for s in args.sizes_mb.split(",")]
  with tempfile.TemporaryDirectory(dir=args.dir) as root:
    rows = [measure(size, args.rounds, root) for size in sizes]
  table = markdown(rows)
  header = (
    f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPU cores, "
    f"{platform.processor() or platform.machine()}; checkpoints in {args.dir or tempfile.gettempdir()}"
  )
  print(header)
  print(table)
  if args.out:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, "-m", "benchmarks.checkpoint_digest", *(argv or sys.argv[1:])])
    (out / "checkpoint_digest.md").write_text(f"{header}\n\n{table}\n\n`{command}`\n")
    record = {"date": datetime.datetime.now().isoformat(), "command": command, "machine": header}
    (out / "checkpoint_digest.json").write_text(json.dumps({**record, "rows": rows}, indent=1))


if __name__ == "__main__":
  main()
