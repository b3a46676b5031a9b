"""What the student keeps: teacher vs student on the same validation split.

For each model: CCC (valence, arousal, mean over the whole split), parameters
(of the deployed model: the student's training-only projector is left out),
the checkpoint file's size and the size of its weights alone (a train
checkpoint also holds optimiser state), and latency per clip (batch of one
spectrogram, model time only) on the CPU and, when there is one, the GPU.

    retention   = student CCC / teacher CCC   (mean CCC; None when the teacher's is <= 0)
    compression = teacher parameters / student parameters
"""

from __future__ import annotations

import io
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPORT_JSON = "distill_report.json"
REPORT_PNG = "distill_report.png"


@dataclass
class ModelFigures:
    """One model's row of the report."""

    name: str
    checkpoint: str
    params: int
    checkpoint_bytes: int
    weights_bytes: int
    ccc_valence: float
    ccc_arousal: float
    ccc_mean: float
    cpu_ms_per_clip: float
    gpu_ms_per_clip: float | None = None


@dataclass
class DistillReport:
    """The comparison; ``as_dict`` is what ``distill_report.json`` holds."""

    teacher: ModelFigures
    student: ModelFigures
    retention: float | None
    compression: float
    size_ratio: float
    split: str
    samples: int
    cpu_threads: int
    notes: list[str] = field(default_factory=list)
    #: {"teacher": …, "student": …}: the checkpoints' own provenance blocks (runtime.provenance)
    provenance: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def weights_bytes(state_dict: dict[str, torch.Tensor]) -> int:
    """Bytes of a state dict saved alone with ``torch.save`` (what shipping the weights costs)."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.tell()


@torch.inference_mode()
def latency_ms(
    model: nn.Module,
    example: torch.Tensor,
    device: torch.device,
    *,
    runs: int = 20,
    warmup: int = 3,
) -> float:
    """Median milliseconds of one forward pass of ``example`` (a batch of one clip) on ``device``.

    The model is moved to ``device`` and left there. CUDA timings synchronise
    before and after each run.
    """
    model = model.to(device).eval()
    x = example.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        model(x)
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def build_report(
    teacher: ModelFigures, student: ModelFigures, *, split: str, samples: int
) -> DistillReport:
    """Retention, compression and size ratio from the two rows."""
    notes = []
    if teacher.ccc_mean > 0:
        retention = student.ccc_mean / teacher.ccc_mean
    else:
        retention = None
        notes.append(f"teacher mean CCC is {teacher.ccc_mean:.4f} (<= 0): retention is undefined")
    return DistillReport(
        teacher=teacher,
        student=student,
        retention=retention,
        compression=teacher.params / student.params,
        size_ratio=teacher.weights_bytes / student.weights_bytes,
        split=split,
        samples=samples,
        cpu_threads=torch.get_num_threads(),
        notes=notes,
    )


def write_report(report: DistillReport, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``distill_report.json`` and a bar chart ``distill_report.png`` (CCC, parameters, size, latency)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / REPORT_JSON
    json_path.write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    png_path = out / REPORT_PNG
    _bar_chart(report, png_path)
    return json_path, png_path


def _bar_chart(report: DistillReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, s = report.teacher, report.student
    panels = [
        ("mean CCC", t.ccc_mean, s.ccc_mean, "{:.3f}"),
        ("parameters (M)", t.params / 1e6, s.params / 1e6, "{:.2f}"),
        ("weights (MB)", t.weights_bytes / 1e6, s.weights_bytes / 1e6, "{:.1f}"),
        ("CPU ms / clip", t.cpu_ms_per_clip, s.cpu_ms_per_clip, "{:.1f}"),
    ]
    if t.gpu_ms_per_clip is not None and s.gpu_ms_per_clip is not None:
        panels.append(("GPU ms / clip", t.gpu_ms_per_clip, s.gpu_ms_per_clip, "{:.2f}"))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2))
    for ax, (title, tv, sv, fmt) in zip(axes, panels, strict=True):
        bars = ax.bar(["teacher", "student"], [tv, sv], color=["#4c72b0", "#dd8452"])
        for bar, value in zip(bars, (tv, sv), strict=True):
            ax.annotate(
                fmt.format(value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    retention = "n/a" if report.retention is None else f"{report.retention:.2f}"
    fig.suptitle(f"retention {retention}, compression {report.compression:.3g}x", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
