"""Training curves: one row per epoch, written as CSV and drawn as PNG."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def write_curves(
    history: list[dict[str, float]],
    out_dir: str | os.PathLike,
    *,
    name: str = "curves",
    png: bool = True,
) -> tuple[Path, Path]:
    """Write ``NAME.csv`` and ``NAME.png`` for a list of per-epoch rows.

    The CSV has one column per key seen (in first-seen order, ``epoch`` first).
    The PNG has one panel for the losses (keys containing "loss") and one for
    every other metric, against the epoch.

    Args:
        history: rows such as ``{"epoch": 1, "train_loss": 0.3, "val_ccc_mean": 0.4}``.
        out_dir: the folder, usually the one holding the checkpoint.
        name: the file stem.
        png: also draw the PNG (matplotlib takes a second or two; the loop
            skips it on short epochs and draws it at the end).

    Returns:
        The CSV and PNG paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Epochs are counts: 3, not 3.0 (rows restored from an older checkpoint held floats).
    history = [
        {**row, "epoch": int(row["epoch"])}
        if isinstance(row.get("epoch"), float) and float(row["epoch"]).is_integer() else row
        for row in history
    ]
    keys: list[str] = ["epoch"]
    for row in history:
        keys += [k for k in row if k not in keys]
    csv_path = out / f"{name}.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    png_path = out / f"{name}.png"
    if png:
        _plot(history, keys, png_path)
    return csv_path, png_path


def _plot(history: list[dict[str, float]], keys: list[str], png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display in notebooks' kernels, containers, CI
    import matplotlib.pyplot as plt

    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k != "epoch" and k not in losses]
    panels = [p for p in (losses, others) if p]
    fig, axes = plt.subplots(
        1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4), squeeze=False
    )
    for ax, panel in zip(axes[0], panels, strict=False):
        for key in panel:
            points = [(row["epoch"], row[key]) for row in history if key in row]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
