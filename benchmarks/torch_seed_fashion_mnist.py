"""PyTorch reference for the two seed Fashion-MNIST autoencoders (FC and CNN).

Reproduces the seed models exactly as written in the source notes and reports,
per seed and per epoch, the mean per-pixel test MSE (images in [-1, 1]), the MSE
of predicting the mean training image (baseline), and the median wall-clock
seconds per training step (excluding the first 10 steps, 2 CPU threads).

Run (from the repository root; venv: python3 -m venv .venv-torch &&
.venv-torch/bin/pip install torch==2.13.0 numpy):
    .venv-torch/bin/python benchmarks/torch_seed_fashion_mnist.py --model mlp \
        --epochs 1 --seeds 0,1,2 --json-out /tmp/torch_mlp_e1.json
    .venv-torch/bin/python benchmarks/torch_seed_fashion_mnist.py --model conv \
        --epochs 1 --seeds 0,1,2 --json-out /tmp/torch_conv_e1.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

R = C = 28
ENCODED_DIMS = 16
WARMUP_STEPS = 10


def load_idx(path: Path) -> np.ndarray:
  """Parse a gzipped idx file: 2 zero bytes, dtype code, ndim, big-endian uint32 dims."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte idx file")
  ndim = data[3]
  dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
  return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_images(data_dir: Path, split: str) -> torch.Tensor:
  """Images of `split` ("train" or "t10k") as float32 (N, 1, 28, 28) in [-1, 1]."""
  raw = load_idx(data_dir / f"{split}-images-idx3-ubyte.gz").astype(np.float32)
  return torch.from_numpy(raw / 255.0 * 2.0 - 1.0).reshape(-1, 1, R, C)


def build_model(kind: str) -> nn.Module:
  if kind == "mlp":
    encoder = nn.Sequential(
      nn.Linear(R * C, 128),
      nn.ReLU(),
      nn.Linear(128, 64),
      nn.ReLU(),
      nn.Linear(64, 32),
      nn.ReLU(),
      nn.Linear(32, ENCODED_DIMS),
    )
    decoder = nn.Sequential(
      nn.Linear(ENCODED_DIMS, 32),
      nn.ReLU(),
      nn.Linear(32, 64),
      nn.ReLU(),
      nn.Linear(64, 128),
      nn.ReLU(),
      nn.Linear(128, R * C),
      nn.Tanh(),
    )
  elif kind == "conv":
    encoder = nn.Sequential(
      nn.Conv2d(1, 8, 3, stride=2, padding=1),
      nn.ReLU(),
      nn.Conv2d(8, 16, 3, stride=2, padding=1),
      nn.ReLU(),
      nn.Conv2d(16, 32, 3, stride=2),
      nn.ReLU(),
      nn.Conv2d(32, 64, 3),
      nn.Flatten(),
      nn.ReLU(),
      nn.Linear(64, 32),
      nn.ReLU(),
      nn.Linear(32, ENCODED_DIMS),
    )
    decoder = nn.Sequential(
      nn.Linear(ENCODED_DIMS, 32),
      nn.ReLU(),
      nn.Linear(32, 64),
      nn.ReLU(),
      nn.Unflatten(1, (64, 1, 1)),
      nn.ConvTranspose2d(64, 32, 3),
      nn.ReLU(),
      nn.ConvTranspose2d(32, 16, 3, stride=2),
      nn.ReLU(),
      nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1),
      nn.ReLU(),
      nn.ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1),
      nn.Tanh(),
    )
  else:
    raise ValueError(f"unknown model {kind!r}")
  return nn.Sequential(encoder, decoder)


@torch.no_grad()
def test_mse(model: nn.Module, images: torch.Tensor, batch: int = 1000) -> float:
  """Mean per-pixel squared error over all of `images`."""
  model.eval()
  total = 0.0
  for i in range(0, len(images), batch):
    x = images[i : i + batch]
    total += float(((model(x) - x) ** 2).sum(dtype=torch.float64))
  model.train()
  return total / images.numel()


def run_seed(
  kind: str, seed: int, train: torch.Tensor, test: torch.Tensor, epochs: int, batch_size: int, lr: float
) -> dict:
  torch.manual_seed(seed)
  model = build_model(kind)
  opt = torch.optim.Adam(model.parameters(), lr=lr)
  loss_fn = nn.MSELoss()
  gen = torch.Generator().manual_seed(seed)
  steps_per_epoch = len(train) // batch_size  # drop_last=True
  step_times: list[float] = []
  epoch_test_mse: list[float] = []
  epoch_train_loss: list[float] = []
  for _ in range(epochs):
    perm = torch.randperm(len(train), generator=gen)
    running = 0.0
    for s in range(steps_per_epoch):
      t0 = time.perf_counter()
      x = train[perm[s * batch_size : (s + 1) * batch_size]]
      loss = loss_fn(model(x), x)
      opt.zero_grad()
      loss.backward()
      opt.step()
      step_times.append(time.perf_counter() - t0)
      running += loss.item()
    epoch_train_loss.append(running / steps_per_epoch)
    epoch_test_mse.append(test_mse(model, test))
  return {
    "seed": seed,
    "params": sum(p.numel() for p in model.parameters()),
    "steps_per_epoch": steps_per_epoch,
    "train_loss_per_epoch": epoch_train_loss,
    "test_mse_per_epoch": epoch_test_mse,
    "median_step_s": statistics.median(step_times[WARMUP_STEPS:]),
    "mean_step_s": statistics.fmean(step_times[WARMUP_STEPS:]),
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", choices=["mlp", "conv"], required=True)
  p.add_argument("--epochs", type=int, default=1)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
  p.add_argument("--json-out", type=Path, default=None)
  args = p.parse_args()

  torch.set_num_threads(2)
  seeds = [int(s) for s in args.seeds.split(",")]
  train = load_images(args.data_dir, "train")
  test = load_images(args.data_dir, "t10k")
  if args.model == "mlp":  # the FC autoencoder consumes and emits flat (N, 784) rows
    train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
  baseline = float(((test - train.mean(dim=0)) ** 2).mean(dtype=torch.float64))
  print(
    f"model={args.model} train={tuple(train.shape)} test={tuple(test.shape)} "
    f"torch={torch.__version__} baseline_mean_image_test_mse={baseline:.5f}"
  )

  results = []
  for seed in seeds:
    r = run_seed(args.model, seed, train, test, args.epochs, args.batch_size, args.lr)
    results.append(r)
    mses = " ".join(f"{m:.5f}" for m in r["test_mse_per_epoch"])
    print(
      f"seed={seed} params={r['params']} test_mse_per_epoch=[{mses}] "
      f"median_step_ms={1e3 * r['median_step_s']:.3f}",
      flush=True,
    )

  per_epoch = np.array([r["test_mse_per_epoch"] for r in results])  # (seeds, epochs)
  std = per_epoch.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(args.epochs)
  summary = {
    "test_mse_mean_per_epoch": per_epoch.mean(axis=0).tolist(),
    "test_mse_std_per_epoch": std.tolist(),  # sample std (ddof=1) over seeds
    "median_step_s_mean": float(np.mean([r["median_step_s"] for r in results])),
  }
  for e, (m, s) in enumerate(zip(summary["test_mse_mean_per_epoch"], std, strict=True), start=1):
    print(f"summary epoch={e} test_mse mean={m:.5f} std={s:.5f} (n={len(seeds)})")
  print(f"summary median_step_ms={1e3 * summary['median_step_s_mean']:.3f} baseline={baseline:.5f}")

  if args.json_out is not None:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {
      "config": config,
      "torch": torch.__version__,
      "threads": 2,
      "baseline_mean_image_test_mse": baseline,
      "results": results,
      "summary": summary,
    }
    args.json_out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
  main()
