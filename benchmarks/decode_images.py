r"""Decode-heavy input: images per second (and per core) of the host pipeline reading JPEG records, by
lever: the caller's thread, `config.data.num_threads`, and `config.data.num_workers` worker processes.

    python -m benchmarks.decode_images                       # 64 px and 256 px JPEGs, every lever
    python -m benchmarks.decode_images --smoke --out DIR     # a few batches, no timing claims

The records are JPEG files decoded as `tfds.data_source` decodes an image feature (tfds'
`features.Image.decode_example_np`, Pillow without OpenCV) when the pipeline reads them, then cropped and
resized by the dataset's batch preprocessing (`images.Geometry`), as `config.data.name="tfds"` reads
celeb_a or imagenet2012. The images are mosaics of CIFAR-10 pictures (2 x 2 at 64 px, 8 x 8 at 256 px,
from <data root>/cifar10-jpeg, re-encoded at JPEG quality 90), so the entropy per pixel is that of
natural 32-px images; without the archive, smoothed noise (the JSON says which).

How each number is measured: for each round, each case (size, lever) in turn builds a fresh
`pipeline.train_batches` stream and consumes batches untimed: 2 x (workers or threads) of them (the
prefetch depth) and, for worker processes, until --warmup seconds have passed, so every worker has
started; then it times --batches batches. images/s is the median over --rounds rounds, interleaved case
by case; first batch: the median time from building the stream to its first batch (a worker's start).
Per core: images/s divided by the cores the lever keeps busy (threads or workers, at most the cores
available). Writes DIR/decode_images.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import itertools
import os
import shlex
import statistics
import sys
import tarfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import report as report_module

SIZES = ((64, 64), (256, 256), (256, 128))  # (stored JPEG side, model input side)
LEVERS = ((1, 0), (2, 0), (0, 1), (0, 2))  # (num_threads, num_workers)


class JpegRecords(Sequence):
  """Records {"image": uint8 [S, S, 3], "label": int} decoded from JPEG bytes as they are read."""

  def __init__(self, blobs: Sequence[bytes]):
    self.blobs = list(blobs)

  def __len__(self) -> int:
    return len(self.blobs)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {"image": _image_feature().decode_example_np(self.blobs[i]), "label": i % 10}


@functools.lru_cache(maxsize=1)
def _image_feature() -> Any:
  from tensorflow_datasets.core.features import image_feature

  return image_feature.Image(shape=(None, None, 3))


def _tiles(count: int, seed: int) -> tuple[np.ndarray, str]:
  """`count` natural 32 x 32 RGB pictures (CIFAR-10) or smoothed noise; (uint8 [count, 32, 32, 3], source)."""
  from ae_jax.data import sources

  archive = sources.data_root() / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
  if archive.exists():
    from PIL import Image

    tiles = []
    with tarfile.open(archive) as tar:
      for member in tar:
        if member.isfile() and member.name.endswith(".jpg"):
          tiles.append(np.asarray(Image.open(tar.extractfile(member)).convert("RGB")))
          if len(tiles) == count:
            break
    return np.stack(tiles), f"CIFAR-10 mosaics ({archive})"
  noise = np.random.default_rng(seed).integers(0, 256, (count, 8, 8, 3)).astype(np.uint8)
  return noise.repeat(4, axis=1).repeat(4, axis=2), "smoothed noise (no CIFAR-10 archive)"


def jpeg_records(side: int, num: int, seed: int = 0) -> tuple[JpegRecords, str]:
  """`num` JPEG records of side x side mosaics of 32-px pictures, and where the pictures came from."""
  from PIL import Image

  per = side // 32
  tiles, origin = _tiles(min(num * per * per, 4096), seed)
  rng = np.random.default_rng(seed)
  blobs = []
  for _ in range(num):
    pick = tiles[rng.integers(0, len(tiles), per * per)].reshape(per, per, 32, 32, 3)
    mosaic = pick.transpose(0, 2, 1, 3, 4).reshape(side, side, 3)
    buf = io.BytesIO()
    Image.fromarray(mosaic).save(buf, "JPEG", quality=90)
    blobs.append(buf.getvalue())
  return JpegRecords(blobs), origin


def _stream(records: JpegRecords, out_side: int, batch: int, threads: int, workers: int):
  import ml_collections

  from ae_jax.data import images, pipeline

  geometry = images.Geometry(image_size=out_side, crop="center", channels=3)
  data = ml_collections.ConfigDict({"scale": "unit", "binarize": "none"})
  info = images.image_info(data, (out_side, out_side, 3), geometry=geometry)
  return pipeline.train_batches(
    records,
    None,
    batch_preprocess=info.batch_preprocess_for(True),
    global_batch=batch,
    seed=0,
    num_threads=threads,
    num_workers=workers,
  )


def measure(
  *,
  batch: int,
  batches: int,
  rounds: int,
  num_records: int,
  warmup: float = 0.0,
  sizes=SIZES,
  levers=LEVERS,
) -> dict[str, Any]:
  """{"cases": [{stored, side, threads, workers, images_per_s, per_core, seconds, first_batch_s}],
  "images": where the pictures came from, "cores"}."""
  cores = len(os.sched_getaffinity(0))
  data = {side: jpeg_records(side, num_records) for side in sorted({s for s, _ in sizes})}
  times: dict[tuple, list[float]] = {}
  firsts: dict[tuple, list[float]] = {}
  for _ in range(rounds):
    for (stored, side), (threads, workers) in itertools.product(sizes, levers):
      stream = _stream(data[stored][0], side, batch, threads, workers)
      started = time.perf_counter()
      next(stream)
      first = time.perf_counter() - started
      # untimed: the prefetch depth, and until every worker has surely started (each imports ae_jax)
      for i in itertools.count(1):
        if i >= 2 * max(threads, workers) and time.perf_counter() - started >= (warmup if workers else 0):
          break
        next(stream)
      firsts.setdefault((stored, side, threads, workers), []).append(first)
      start = time.perf_counter()
      for _ in range(batches):
        next(stream)
      times.setdefault((stored, side, threads, workers), []).append(time.perf_counter() - start)
      stream.close()
  cases = []
  for (stored, side, threads, workers), seconds in times.items():
    rate = batches * batch / statistics.median(seconds)
    busy = min(max(threads, workers), cores)
    cases.append(
      {
        "stored": stored,
        "side": side,
        "threads": threads,
        "workers": workers,
        "images_per_s": rate,
        "per_core": rate / busy,
        "seconds": seconds,
        "first_batch_s": statistics.median(firsts[(stored, side, threads, workers)]),
      }
    )
  return {"cases": cases, "images": data[sizes[0][0]][1], "cores": cores}


def _lever(case: dict[str, Any]) -> str:
  if case["workers"]:
    return f"num_workers={case['workers']}"
  return "caller's thread" if case["threads"] <= 1 else f"num_threads={case['threads']}"


def markdown(result: dict[str, Any]) -> str:
  """The table: one row per case, with its speed-up over the caller's thread at the same size."""
  base = {
    (c["stored"], c["side"]): c["images_per_s"]
    for c in result["cases"]
    if c["threads"] == 1 and not c["workers"]
  }
  lines = [
    "| JPEG | model input | lever | images/s | per busy core | vs the caller's thread | first batch s |",
    "|---|---|---|---|---|---|---|",
  ]
  for c in result["cases"]:
    ratio = c["images_per_s"] / base[(c["stored"], c["side"])] if (c["stored"], c["side"]) in base else None
    lines.append(
      f"| {c['stored']} px | {c['side']} px | {_lever(c)} | {c['images_per_s']:,.0f} | {c['per_core']:,.0f} "
      f"| {'' if ratio is None else f'{ratio:.2f}'} | {c['first_batch_s']:.2f} |"
    )
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--batches", type=int, default=16, help="timed batches per case and round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--records", type=int, default=512, help="JPEG records per size")
  p.add_argument("--warmup", type=float, default=6.0, help="untimed seconds of a worker stream's start")
  p.add_argument("--out", default="runs/benchmark")
  p.add_argument("--smoke", action="store_true", help="64 px only, a few batches: no timing claims")
  args = p.parse_args(argv)
  options = dict(
    batch=args.batch, batches=args.batches, rounds=args.rounds, num_records=args.records, warmup=args.warmup
  )
  if args.smoke:
    options = dict(batch=4, batches=2, rounds=1, num_records=16, sizes=((64, 32),), levers=((1, 0), (0, 1)))
  load_start = os.getloadavg()
  result = measure(**options)
  report = {
    "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "command": shlex.join(["python", "-m", "benchmarks.decode_images", *argv]),
    "timing_claims": not args.smoke,
    "load_average": {"start": load_start, "end": os.getloadavg()},
    **{k: v for k, v in options.items() if k in ("batch", "batches", "rounds", "num_records", "warmup")},
    **result,
  }
  headline = f"{report['command']} ({report['date']}, {result['cores']} cores, {result['images']})"
  report_module.write_standalone(args.out, "decode_images", report, markdown(result), headline)
  return 0


if __name__ == "__main__":
  sys.exit(main())
