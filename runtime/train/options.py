"""Click pieces every stack command shares: compute options, one-line errors, rank-0 output.

The stacks (``emotion_*``, ``landcover``/``flood`` via ``runtime.vision.commands``,
``masked_ssl``, ``ddrm``) declare ``--device`` and ``--precision`` alike, turn the
errors a user can fix into one-line CLI errors alike, and print only on rank 0
under torchrun. Imports only click and the standard library, like the stack
modules (``bundle run --help`` must stay fast).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from runtime import constants


@dataclass(kw_only=True)
class TrainingOptions:
    """What every training command takes besides its data and model: the stacks' configs
    extend it (``runtime.vision.classify.TrainConfig``, ``segment.SegmentConfig``,
    ``pretrain.PretrainConfig``), overriding a default where their recipe differs."""

    #: the run folder: checkpoints, curves, metrics
    out: Path
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.2
    workers: int | None = None
    accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    progress: bool = True
    resume: Path | None = None
    skip_bad_files: bool = False

    @classmethod
    def pick(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The shared fields among a command's parsed options."""
        names = {f.name for f in fields(TrainingOptions)}
        return {k: v for k, v in options.items() if k in names}

    def fit_settings(self, out_dir: Any) -> dict[str, Any]:
        """The keyword arguments of ``runtime.train.loop.fit`` these options decide."""
        return {"epochs": self.epochs, "out_dir": out_dir, "accum_steps": self.accum_steps,
                "max_grad_norm": self.max_grad_norm, "resume": self.resume,
                "progress": self.progress}


#: Path types of the stacks' options: folders and files that must exist, and outputs.
IN_FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)
IN_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUT_FOLDER = click.Path(file_okay=False, path_type=Path)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)
#: An input file the command checks itself: its error names the file and what to pass
#: (a missing checkpoint, encoder or last.pt), where click's would only say "does not exist".
CHECKED_FILE = click.Path(dir_okay=False, path_type=Path)

#: ``--precision`` choices understood by ``runtime.train.precision.choose_precision``.
PRECISION_NAMES = ("auto", "bf16", "fp16", "fp32")
PRECISION_HELP = "auto: bf16 on sm_80+, fp16 + GradScaler below, fp32 on CPU."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."


def device_option(*, help: str = DEVICE_HELP) -> Callable[[Callable], Callable]:
    """``--device`` (default ``auto``: the GPU when there is one)."""
    return click.option("--device", default="auto", show_default=True, help=help)


def precision_option() -> Callable[[Callable], Callable]:
    """``--precision`` (default ``auto``, see :data:`PRECISION_HELP`)."""
    return click.option(
        "--precision",
        type=click.Choice(PRECISION_NAMES),
        default="auto",
        show_default=True,
        help=PRECISION_HELP,
    )


def with_options(*options: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """One decorator for a list of click options, listed in the order ``--help`` shows them."""

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def is_main_process() -> bool:
    """False on the ranks other than 0 under torchrun (they stay quiet)."""
    return constants.rank() == 0


def main_process_log(ctx: Any) -> Callable[[str], None]:
    """A ``log(line)`` that writes to stderr on the main rank of ``ctx`` (a DistContext) only."""

    def log(line: str) -> None:
        if ctx.is_main:
            print(line, file=sys.stderr, flush=True)

    return log


@contextlib.contextmanager
def one_line_errors(*also: type[BaseException]) -> Iterator[None]:
    """The errors a user can fix become one-line CLI errors (no traceback, exit 1): every
    ``runtime.errors.BundleRuntimeError`` (the runtime's public errors, each naming the
    file or option and the next step), and those of the classes in ``also``.

    Other exceptions pass unchanged: they are bugs, and their traceback helps.
    """
    from runtime.errors import BundleRuntimeError

    try:
        yield
    except click.ClickException:
        raise
    except (BundleRuntimeError, *also) as exc:
        raise click.ClickException(str(exc)) from None
