"""Image grids written as PNG with Pillow."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
  """Tiles images [N, H, W, C] with values in [0, 1] into one uint8 image [rows*(H+pad)+pad, ..., C]."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  nrows = -(-n // ncols)
  grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, ncols)
    grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = (
      img
    )
  return (grid * 255).round().astype(np.uint8)


def _enlarged(grid: np.ndarray, scale: int) -> Image.Image:
  img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _write(path: str, img: Image.Image) -> str:
  """Writes to a temporary name then renames, so an interrupted run never leaves a truncated PNG."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  img.save(tmp, format="PNG")
  os.replace(tmp, path)
  return path


def save_png(path: str, grid: np.ndarray, scale: int = 3) -> str:
  """Writes a uint8 image [H, W, C] (C = 1 or 3) as PNG, enlarged `scale` times; returns the path."""
  return _write(path, _enlarged(grid, scale))


def label_rows(img: Image.Image, labels: list[str], tile: int, pad: int) -> Image.Image:
  """`img` with a white margin on its left naming each row of tiles: labels[r] beside row r, whose tiles
  are `tile` pixels high with `pad` pixels around them (the layout of `image_grid`, enlarged)."""
  from PIL import ImageDraw, ImageFont

  font = ImageFont.load_default(size=int(np.clip(tile // 4, 10, 16)))
  width = max(int(font.getlength(label)) for label in labels) + 2 * max(pad, 4)
  out = Image.new(img.mode, (img.width + width, img.height), "white")
  out.paste(img, (width, 0))
  draw = ImageDraw.Draw(out)
  for r, label in enumerate(labels):
    middle = pad + r * (tile + pad) + tile // 2
    draw.text((max(pad, 4), middle), label, fill="black", font=font, anchor="lm")
  return out


def save_reconstructions(
  path: str, originals: np.ndarray, recons: np.ndarray, ncols: int = 8, scale: int = 3
) -> str:
  """PNG of originals [N, H, W, C] in [0, 1] with their reconstructions below them, row pair by row pair,
  each row labelled "original" or "reconstruction" on the left."""
  n = len(originals)
  rows = []
  for start in range(0, n, ncols):
    block = slice(start, min(start + ncols, n))
    rows += [originals[block], recons[block]]
    missing = ncols - len(originals[block])
    if missing:  # pad a short last row pair with blank tiles
      blank = np.ones((missing, *originals.shape[1:]), np.float32)
      rows[-2], rows[-1] = np.concatenate([rows[-2], blank]), np.concatenate([rows[-1], blank])
  pad = 2
  img = _enlarged(image_grid(np.concatenate(rows), ncols, pad), scale)
  labels = ["original", "reconstruction"] * (len(rows) // 2)
  return _write(path, label_rows(img, labels, originals.shape[1] * scale, pad * scale))


def save_scatter(
  path: str, points: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | None, title: str
) -> str:
  """Scatter plot PNG of points [N, 2] coloured by integer labels [N] (matplotlib, no display needed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
  for label in np.unique(labels):
    sel = labels == label
    name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
    ax.scatter(points[sel, 0], points[sel, 1], s=4, alpha=0.6, label=name)
  ax.set_title(title)
  ax.legend(markerscale=3, fontsize=7, loc="best")
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)
  return path
