"""One size formatter for every command: decimal units (1 kB = 1000 B), as tqdm's byte
counters and download sites show them, one decimal place."""

from __future__ import annotations


def human_size(n: int | float) -> str:
    """``976600`` -> ``976.6 kB``; ``1_000_000`` -> ``1.0 MB``; bytes below 1000 as ``512 B``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
