"""`flood`: binary flood detection on image tiles, ViT-B/16 or a CNN.

Data: two class folders, e.g. ``DATA/flood/*`` and ``DATA/no_flood/*``
(``--positive-class`` names the positive one). The decision threshold is the one
with the best F1 on the validation split; it is stored in the checkpoint and used
by ``evaluate`` and ``predict`` unless ``--threshold`` is given. Metrics:
precision, recall, F1, accuracy, ROC-AUC.

Sen1Floods11 as downloaded (``--data v1.1``): ``--task segment`` maps water per pixel
with the U-Net (IoU, F1, precision, recall per split and on the Bolivia hold-out;
predict writes GeoTIFF masks with the chip's georeference), ``--task classify``
labels each chip; ``--bands s1|s2|both``.

Examples:

\b
    bundle run flood train --data flood_tiles --out runs/flood --epochs 5
    bundle run flood train --data flood_tiles --out runs/flood-cnn --arch mobilenet_v3_small
    bundle run flood evaluate --checkpoint runs/flood/best.pt --data flood_test --out runs/flood/test
    bundle run flood predict --checkpoint runs/flood/best.pt new_tiles/ --json
    bundle run flood attention --checkpoint runs/flood/best.pt new_tiles/x.png --out runs/flood/attn
    bundle run flood train --task segment --data sen1floods11/v1.1 --out runs/seg
    bundle run flood predict --checkpoint runs/seg/best.pt v1.1/data/flood_events/HandLabeled/S1Hand --out masks
"""

from __future__ import annotations

import click

from runtime.stacks.record import register_stack
from runtime.vision.commands import (
    backbone_needs,
    make_attention_command,
    make_evaluate_command,
    make_predict_command,
    make_train_command,
)

STACK = "flood"

@register_stack(STACK, summary="binary flood detection on tiles, and Sen1Floods11 water maps and chip labels",
                needs=backbone_needs("vit_b_16", tasks=True), docs="docs/vision.md",
                # a --task segment checkpoint writes NAME_WaterMask.tif into --out (a folder)
                inference="predict --checkpoint {checkpoint} {data} --out {out}/predictions")
@click.group(STACK, help=__doc__)
def cli() -> None:
    pass


cli.add_command(
    make_train_command(STACK, "binary", default_arch="vit_b_16", select="f1", binary=True)
)
cli.add_command(make_evaluate_command(STACK))
cli.add_command(make_predict_command(STACK))
cli.add_command(make_attention_command(STACK))


if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.flood [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.flood")
