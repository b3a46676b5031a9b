"""Checkpoints: atomic save, ``weights_only`` load, keep the best, resume, seeds."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.atomic import atomic_write
from runtime.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    """What a checkpoint file holds besides the state dicts."""

    path: Path
    epoch: int
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    best: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int = 0,
    step: int = 0,
    metrics: dict[str, float] | None = None,
    config: dict[str, Any] | None = None,
    best: float | None = None,
    history: list[dict[str, float]] | None = None,
    resumable: bool = True,
) -> Path:
    """Write a checkpoint so that it is never seen half-written.

    The file is written next to its final name and moved into place with
    ``os.replace``. Everything stored loads with ``torch.load(weights_only=True)``:
    ``config`` and ``metrics`` must hold plain values (str, numbers, lists, dicts).

    Args:
        path: the checkpoint file (parent folders are created).
        model: the model (a DDP wrapper is unwrapped).
        optimizer, scheduler, scaler: their states, for resuming.
        epoch: the number of epochs completed.
        step: the number of optimiser steps taken.
        metrics: the metrics of this epoch.
        config: the run's options, to rebuild the model at evaluation time.
        best: the best value of the selection metric so far.
        history: the per-epoch rows so far (the curves continue after a resume).
        resumable: False writes the model, its config, metrics and provenance only, no
            optimiser, scheduler, scaler or RNG state (``best.pt``: about the model's size;
            a ViT-B/16 run's AdamW state would triple it). Resume from ``last.pt``.

    Returns:
        The path written.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": getattr(model, "module", model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None and resumable else None,
        "scheduler": scheduler.state_dict() if scheduler is not None and resumable else None,
        "scaler": scaler.state_dict() if scaler is not None and resumable else None,
        "resumable": bool(resumable),
        "epoch": int(epoch),
        "step": int(step),
        "metrics": {k: _number(v) for k, v in (metrics or {}).items()},
        "config": dict(config or {}),
        "best": None if best is None else float(best),
        "history": [{k: _number(v) for k, v in row.items()} for row in history or []],
        "torch_rng": torch.get_rng_state() if resumable else None,
        "run": run_record(),
    }
    with atomic_write(path, prefix=f".{path.name}.") as fh:
        torch.save(state, fh)
    return path


_RUN: dict[str, Any] = {}
_COMMAND: list[str] = []


def note_command(argv: list[str]) -> None:
    """The command line as the user typed it (``bundle run STACK train ...``), noted by the
    launchers; without it, a checkpoint records ``sys.argv``."""
    _COMMAND[:] = [str(a) for a in argv]
    _RUN.clear()


def run_record() -> dict[str, Any]:
    """What made this process's checkpoints: the command line (URL secrets redacted), the
    code version and when it started; ``bundle from-run`` copies it into the run bundle."""
    if not _RUN:
        import platform
        import sys
        import time
        from importlib.metadata import PackageNotFoundError, version

        import torch

        from runtime.redact import redact_url

        try:
            ours = version("offline-bundle")
        except PackageNotFoundError:
            ours = "unknown"
        _RUN.update({
            "command": [str(redact_url(arg)) for arg in (_COMMAND or sys.argv)],
            "offline_bundle": ours,
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
    return dict(_RUN)


def _number(value: Any) -> int | float:
    """Plain numbers for a checkpoint: counts (epoch, samples) stay ints, the rest floats."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return float(value)


def describe_file(path: str | os.PathLike) -> str:
    """What a file looks like, for an error about it ("JSON text", "a zip archive, cut
    short", ...), from its first bytes: a few words, never a library's advice."""
    import zipfile

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size == 0:
        return "empty (0 bytes)"
    stripped = head.lstrip()
    if head.startswith(b"PK\x03\x04"):
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    pickled = any(n.endswith("/data.pkl") for n in archive.namelist())
            except (OSError, zipfile.BadZipFile):
                pickled = False
            if pickled:
                return f"a PyTorch checkpoint (torch.save) of {size} bytes"
            return f"a zip archive of {size} bytes, but not a complete PyTorch checkpoint"
        return f"a zip archive of {size} bytes that is cut short or damaged (a partial download?)"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return f"a pickle file of {size} bytes (the old torch.save format, or another program's)"
    if len(head) >= 10 and head[8:10] == b'{"':
        return f"a safetensors file of {size} bytes (tensors only, no checkpoint record)"
    if stripped[:1] in (b"{", b"["):
        return f"JSON text of {size} bytes (starts with {head[:12]!r})"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"text of {size} bytes (starts with {head[:12]!r})"
    return f"{size} bytes starting with {head[:8]!r}, not a format torch.save writes"


def safe_torch_load(path: str | os.PathLike, *, what: str, expected: str, hint: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, or one CheckpointError that says what
    the file should be (``expected``), what it looks like instead, and ``hint`` (the next
    step). torch's own text is left out: it suggests weights_only=False, which would run
    whatever code a pickle holds.

    Args:
        what: how the user named the file, e.g. "--init-encoder" or "checkpoint".
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist; {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            zipfile.BadZipFile, AttributeError, ImportError, KeyError, IndexError) as exc:
        refused = isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc)
        looks = describe_file(path)
        if refused:
            looks += " that holds Python objects besides tensors (refused: loading them could run code)"
        raise CheckpointError(f"{what} {path} is not {expected}: it is {looks}. {hint}") from None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint's raw dict with ``weights_only=True`` (on CPU).

    Raises:
        CheckpointError: the file is missing or not a checkpoint of this project.
    """
    path = Path(path)
    state = safe_torch_load(
        path, what="checkpoint", expected="a checkpoint written by `bundle run STACK train`",
        hint="Pass the best.pt or last.pt that train wrote.",
    )
    if not isinstance(state, dict) or "model" not in state or "format" not in state:
        raise CheckpointError(
            f"{path} is not a checkpoint written by runtime.train (it loads, but has no "
            "'model'/'format' field: a bare state dict or another program's file?); pass "
            "the best.pt or last.pt that train wrote"
        )
    return state


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    restore_rng: bool = False,
) -> Checkpoint:
    """Load a checkpoint into the given objects (those passed as None are skipped).

    Args:
        path: a file written by :func:`save_checkpoint`.
        model: receives the weights (strictly: every key must match).
        optimizer, scheduler, scaler: receive their states when the file has them.
        restore_rng: also restore torch's CPU random state (exact resume).

    Returns:
        The :class:`Checkpoint` record (epoch, step, metrics, config, best).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the model.
    """
    import torch

    state = read_checkpoint(path)
    if model is not None:
        try:
            getattr(model, "module", model).load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit the model (was it trained with other "
                f"model options?): {exc}"
            ) from exc
    if optimizer is not None and state.get("resumable") is False:
        raise CheckpointError(
            f"{path} holds the model only (best.pt keeps no optimiser state); resume from "
            f"the last.pt next to it: --resume {Path(path).with_name('last.pt')}"
        )
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng and state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
    return Checkpoint(
        path=Path(path),
        epoch=state["epoch"],
        step=state["step"],
        metrics=state.get("metrics", {}),
        config=state.get("config", {}),
        best=state.get("best"),
        history=state.get("history", []),
    )


@dataclass
class BestTracker:
    """Remembers the best value of the selection metric.

    Attributes:
        metric: the metric's name, e.g. "val_ccc_mean" or "val_loss".
        mode: "max" when higher is better, "min" otherwise.
        best: the best value seen, None before the first.
    """

    metric: str
    mode: str = "max"
    best: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    def update(self, metrics: dict[str, float]) -> bool:
        """Record this epoch's metrics; True when the selection metric improved.

        Raises:
            KeyError: the metrics lack the selection metric (names the ones present).
        """
        if self.metric not in metrics:
            raise KeyError(
                f"selection metric {self.metric!r} not among the metrics: {', '.join(metrics)}"
            )
        value = float(metrics[self.metric])
        if value != value:  # NaN never improves
            return False
        better = (
            self.best is None
            or (self.mode == "max" and value > self.best)
            or (self.mode == "min" and value < self.best)
        )
        if better:
            self.best = value
        return better
