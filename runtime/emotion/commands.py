"""The ``train`` / ``evaluate`` / ``predict`` click group of an emotion stack."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime.data.badfiles import SKIP_HELP, SKIP_OPTION
from runtime.emotion import recipe
from runtime.emotion.model import EmotionStack
from runtime.train.options import (
    CHECKED_FILE,
    IN_FILE,
    IN_FOLDER,
    OUT_FILE,
    OUT_FOLDER,
    device_option,
    is_main_process,
    one_line_errors,
    precision_option,
    with_options,
)

OFFSET_OPTION = click.option("--offset", default=0.0, show_default=True,
                             help="Seconds skipped at the start of each file.")


# --- the commands --------------------------------------------------------------


def run_command(fn: Callable[[], Any]) -> Any:
    """Run a command's work (``train``, ``evaluate``, ...): the user's errors (the
    runtime's, and an unreadable file) as one line, the process group left behind."""
    try:
        with one_line_errors(OSError):
            return fn()
    finally:
        from runtime.train.distributed import cleanup_distributed

        cleanup_distributed()


_CHECKPOINT = click.option(
    "--checkpoint", required=True, type=CHECKED_FILE,
    help="best.pt written by train, or the id of a checkpoint artifact in an attached bundle "
         "(bundle from-run).")

#: ``--device``, ``--precision``, ``--batch-size``, ``--cache-dir``, ``--progress``,
#: ``--skip-bad-files``: how every emotion command computes.
compute_options = with_options(
    device_option(),
    precision_option(),
    click.option("--batch-size", default=16, show_default=True, help="Per process (per GPU)."),
    click.option("--cache-dir", type=OUT_FOLDER, default=None,
                 help="Feature cache folder (default: OUT/cache, or next to the checkpoint)."),
    click.option("--progress/--no-progress", default=True, show_default=True,
                 help="Progress bars on stderr."),
    click.option(SKIP_OPTION, "skip_bad_files", is_flag=True, help=SKIP_HELP),
)


def make_cli(stack: EmotionStack, *, doc: str) -> click.Group:
    """The ``train`` / ``evaluate`` / ``predict`` click group of an emotion stack."""

    @click.group(name=stack.name, help=doc)
    def cli() -> None:
        pass

    def train_command(**opts: Any) -> None:
        summary = run_command(lambda: recipe.train(stack, opts))
        # Under torchrun only rank 0 prints the summary.
        if opts["json"] and summary is not None and is_main_process():
            click.echo(json.dumps(summary, indent=1))

    train_command.__doc__ = f"""Fine-tune {stack.default_model} + a regression head on valence/arousal.

    DATA is a DEAM folder (DEAM_audio/MEMD_audio + DEAM_Annotations) or a folder
    with labels.csv (file, valence, arousal). OUT receives best.pt (highest
    validation CCC), last.pt, curves.csv, curves.png and summary.json.

    \b
    Examples:
      bundle run {stack.name} train --data /kaggle/input/deam --out runs/{stack.name} --epochs 10
      torchrun --nproc_per_node 2 -m runtime.stacks.{stack.name.replace("-", "_")} train --data D --out O
      bundle run {stack.name} train --data D --out O --resume O/last.pt --epochs 20
    """
    train_options = with_options(
        click.option("--data", required=True, type=IN_FOLDER, help="Data folder."),
        click.option("--out", required=True, type=OUT_FOLDER, help="Output folder."),
        click.option("--model", default=stack.default_model, show_default=True,
                     help="Backbone: artifact id or ref in the attached bundles, or a local folder."),
        click.option("--epochs", default=10, show_default=True),
        click.option("--lr", default=1e-3, show_default=True, help="Learning rate of the head."),
        click.option("--backbone-lr", default=3e-5, show_default=True,
                     help="Learning rate of the pretrained backbone."),
        click.option("--weight-decay", default=0.01, show_default=True),
        click.option("--warmup", default=0.1, show_default=True,
                     help="Warm-up, as a fraction of all steps."),
        click.option("--accum", default=1, show_default=True, help="Micro-batches per optimiser step."),
        click.option("--clip", default=1.0, show_default=True,
                     help="Max gradient norm (0: no clipping)."),
        click.option("--train-blocks", type=int, default=None,
                     help="Train only the last K transformer blocks (0: frozen backbone)."),
        click.option("--dropout", default=0.1, show_default=True),
        click.option("--val-fraction", default=0.2, show_default=True),
        click.option("--seed", default=0, show_default=True),
        click.option("--label-scale", type=click.Choice(["auto", "1-9", "unit"]), default="auto",
                     show_default=True, help="Scale of labels.csv (DEAM annotations are always 1-9)."),
        click.option("--workers", default=2, show_default=True, help="DataLoader worker processes."),
        click.option("--resume", type=IN_FILE, default=None, help="Continue from a last.pt."),
        click.option("--json", "json", is_flag=True, help="Print the run summary as JSON on stdout."),
        *stack.options,
    )
    cli.command("train")(train_options(compute_options(train_command)))

    @cli.command("evaluate")
    @_CHECKPOINT
    @click.option("--data", required=True, type=IN_FOLDER)
    @click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True,
                  help="val/train: the split of the checkpoint's seed and fraction.")
    @click.option("--json", "json", is_flag=True, help="Print the metrics as JSON.")
    @click.option("--output", type=OUT_FILE, default=None,
                  help="Also write the metrics, the checkpoint and its provenance here as JSON.")
    @compute_options
    def evaluate_command(output: Path | None, **opts: Any) -> None:
        """CCC (over the whole set), Pearson, RMSE and R² of a checkpoint.

        The checkpoint and the backbone it was trained from (bundle, artifact,
        sha256) are printed first and kept in the JSON.

        \b
        Example:
          bundle run STACK evaluate --checkpoint runs/x/best.pt --data /kaggle/input/deam --json
          bundle run STACK evaluate --checkpoint runs/x/best.pt --data D --output runs/x/eval.json
        """
        metrics = run_command(lambda: recipe.evaluate(stack, opts))
        if not is_main_process():
            return
        if output is not None:
            from runtime.atomic import atomic_write

            output.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(output) as fh:
                fh.write((json.dumps(metrics, indent=1) + "\n").encode())
        if opts["json"]:
            click.echo(json.dumps(metrics, indent=1))
        else:
            for key, value in metrics.items():
                if isinstance(value, float):
                    click.echo(f"{key:<18} {value:.4f}")

    evaluate_command.help = evaluate_command.help.replace("STACK", stack.name)

    @cli.command("predict")
    @click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @_CHECKPOINT
    @click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
    @click.option("--output", type=OUT_FILE, default=None, help="Write here instead of stdout.")
    @compute_options
    def predict_command(
        files: tuple[Path, ...], fmt: str, output: Path | None, **opts: Any
    ) -> None:
        """Valence and arousal of audio FILES (or folders of them), per file.

        Values are in [-1, 1] (valence, arousal) and on DEAM's 1-9 scale.

        \b
        Example:
          bundle run STACK predict --checkpoint runs/x/best.pt song1.mp3 songs/ --format csv
        """
        rows, origin = run_command(lambda: recipe.predict(stack, {**opts, "files": files}))
        if fmt == "json":
            text = json.dumps(rows, indent=1) + "\n"
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            text = buf.getvalue()
        if output:
            from runtime.provenance import write_beside

            output.write_text(text)
            write_beside(output, origin)
        else:
            click.echo(text, nl=False)

    predict_command.help = predict_command.help.replace("STACK", stack.name)
    return cli
