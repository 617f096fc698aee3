"""Aligned plain-text columns within a line width: one column wraps (after a ", " where it can) and takes
the width the others leave. Used by the bottleneck inspector's report (`ae_jax.runner.bottleneck`)."""

from __future__ import annotations

from collections.abc import Sequence

MAX_WIDTH = 110  # the lines' width: a long cell (a quantizer's dict of output shapes) wraps
MIN_WRAP = 24  # the narrowest a wrapped column gets, however wide the others are


def pieces(text: str, width: int) -> list[str]:
  """`text` cut after each ", " at the outermost bracket depth, and a piece still longer than `width` cut
  again one level deeper (so `{a: [B, 8], b: {c: [], d: []}}` breaks between its entries, inside b only
  if b is long, and inside a shape last)."""
  depths, level = [], 0
  for ch in text:
    level += ch in "([{"
    depths.append(level)
    level -= ch in ")]}"

  def cut(a: int, b: int, depth: int) -> list[str]:
    if b - a <= width or depth > max(depths[a:b]):
      return [text[a:b].rstrip()]
    cuts = [a, *(i + 2 for i in range(a, b - 1) if depths[i] == depth and text.startswith(", ", i)), b]
    return [p for lo, hi in zip(cuts, cuts[1:], strict=False) for p in cut(lo, hi, depth + 1)]

  return cut(0, len(text), 1)


def wrap_text(text: str, width: int) -> list[str]:
  """`text` in lines of at most `width` characters where it can be broken (after a ", ", see `pieces`);
  continuation lines are indented by one space."""
  if len(text) <= width:
    return [text]
  first, *rest = pieces(text, width - 1)
  lines = [first]
  for piece in rest:
    if len(lines[-1]) + 1 + len(piece) <= width:
      lines[-1] += " " + piece
    else:
      lines.append(" " + piece)
  return lines


def columns(
  header: Sequence[str], rows: list[Sequence[str]], right: set[int], wrap: int, width: int = MAX_WIDTH
) -> list[str]:
  """Rows of cells as aligned columns (those in `right` right-aligned) within `width` characters where
  possible: column `wrap` takes what the others leave (at least MIN_WRAP) and its longer cells continue on
  the next lines."""
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
  others = sum(w for i, w in enumerate(widths) if i != wrap) + 2 * (len(header) - 1)
  widths[wrap] = min(widths[wrap], max(width - others, MIN_WRAP, len(header[wrap])))
  cell = lambda i, s: s.rjust(widths[i]) if i in right else s.ljust(widths[i])
  lines = []
  for r in [header, *rows]:
    first, *rest = wrap_text(r[wrap], widths[wrap])
    lines.append("  ".join(cell(i, first if i == wrap else s) for i, s in enumerate(r)).rstrip())
    lines += ["  ".join(cell(i, more if i == wrap else "") for i in range(len(r))).rstrip() for more in rest]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return lines
