"""`masked-ssl`: self-supervised pre-training of a U-Net on unlabelled satellite tiles.

Tasks: ``masked`` (reconstruct randomly blanked patches; loss on masked pixels
only), ``temporal`` (predict the next frame of a time series), ``both`` (shared
encoder, summed losses). Mixed precision follows the shared policy (bf16 on
sm_80+, fp16 with a GradScaler below, fp32 on CPU); a batch whose random mask is
empty skips its optimiser step cleanly. The encoder is saved as ``encoder.pt``
for ``landcover train --arch unet_cnn --init-encoder``.

Data: ``--data DIR`` any images under DIR, or a Sen1Floods11 download (``v1.1``):
its training chips, ``--bands s1|s2|both``, labels unused; ``--series DIR`` one
sub-folder per time series, frames in file-name order.

Examples:

\b
    bundle run masked-ssl pretrain --data tiles/ --out runs/ssl --epochs 20
    bundle run masked-ssl pretrain --task temporal --series series/ --out runs/ssl-t
    bundle run masked-ssl pretrain --task both --data tiles/ --series series/ --out runs/ssl-b
    bundle run landcover train --data EuroSAT_RGB --out runs/cnn --arch unet_cnn \\
      --image-size 64 --init-encoder runs/ssl/encoder.pt
    bundle run masked-ssl pretrain --data sen1floods11/v1.1 --bands s1 --image-size 128 --out runs/ssl-s1
    bundle run flood train --data sen1floods11/v1.1 --task segment --init-encoder runs/ssl-s1/encoder.pt \\
      --out runs/seg
"""

from __future__ import annotations

import click

from runtime.data.badfiles import SKIP_HELP, SKIP_OPTION
from runtime.stacks.record import register_stack
from runtime.train.options import IN_FOLDER, OUT_FOLDER, device_option, precision_option
from runtime.vision.commands import emit, friendly_errors

STACK = "masked-ssl"



def _widths(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use comma-separated integers, e.g. 16,32,64,128"
        ) from None
    if len(widths) < 2 or min(widths) < 1:
        raise click.BadParameter(f"{value!r}: give at least two positive widths")
    return widths


# Trained from scratch: nothing is loaded from a bundle.
@register_stack(STACK, summary="masked-image-modelling U-Net pre-training on satellite tiles",
                docs="docs/vision.md")
@click.group(STACK, help=__doc__)
def cli() -> None:
    pass


@cli.command("pretrain")
@click.option("--task", type=click.Choice(["masked", "temporal", "both"]), default="masked", show_default=True)
@click.option("--data", type=IN_FOLDER, default=None, help="Unlabelled tiles (masked, both).")
@click.option("--series", type=IN_FOLDER, default=None,
              help="Time series, one sub-folder each (temporal, both).")
@click.option("--out", type=OUT_FOLDER, required=True,
              help="Run folder: best.pt, last.pt, curves, encoder.pt.")
@click.option("--image-size", type=int, default=64, show_default=True)
@click.option("--patch-size", type=int, default=8, show_default=True,
              help="Side of the square patches that are masked.")
@click.option("--mask-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.6, show_default=True,
              help="Probability that a patch is masked (above 0, below 1).")
@click.option("--context", type=int, default=2, show_default=True,
              help="Frames given to predict the next one (temporal).")
@click.option("--widths", default="16,32,64,128", show_default=True, callback=_widths,
              help="Channels per U-Net level.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@precision_option()
@device_option()
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--workers", type=int, default=None,
              help="DataLoader workers [default: 0 on CPU, 4 with a GPU].")
@click.option("--bands", type=click.Choice(["s1", "s2", "both"]), default="s1", show_default=True,
              help="Sen1Floods11 chips (--data v1.1): the bands the encoder learns to read.")
@click.option(SKIP_OPTION, "skip_bad_files", is_flag=True, help=SKIP_HELP)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@friendly_errors
def pretrain(as_json: bool, no_progress: bool, **kw: object) -> None:
    """Pre-train the U-Net; write checkpoints, curves and encoder.pt to --out."""
    from runtime.vision.pretrain import PretrainConfig
    from runtime.vision.pretrain import pretrain as run

    summary = run(PretrainConfig(progress=not no_progress, **kw))  # type: ignore[arg-type]
    text = (
        f"{summary['task']} pre-training, {summary['epochs']} epochs ({summary['precision']}): "
        f"train loss {summary['first_train_loss']:.4f} -> {summary['last_train_loss']:.4f}; "
        f"encoder {summary['encoder']}"
    )
    emit(summary, as_json, text)


if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.masked_ssl [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.masked_ssl")
