"""`landcover`: 10-class land-cover classification (EuroSAT-style folders), with attention maps.

Models: torchvision ViT-B/16 (``ViT_B_16_Weights.IMAGENET1K_V1`` from the bundle,
head replaced, position embeddings interpolated for other input sizes), and CNN
baselines: torchvision MobileNetV3-Small / ResNet-18 (bundled weights) or our
U-Net-encoder CNN, which can start from a masked-ssl encoder.

Examples:

\b
    bundle run landcover train --data EuroSAT_RGB --out runs/vit --epochs 5
    bundle run landcover train --data EuroSAT_RGB --out runs/cnn --arch unet_cnn \\
      --image-size 64 --init-encoder runs/ssl/encoder.pt
    bundle run landcover evaluate --checkpoint runs/vit/best.pt --data EuroSAT_test --out runs/vit/test
    bundle run landcover predict --checkpoint runs/vit/best.pt tiles/ --out preds.csv
    bundle run landcover attention --checkpoint runs/vit/best.pt tiles/a.jpg --out runs/vit/attn
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

STACK = "landcover"

@register_stack(STACK, summary="10-class land-cover classification with attention maps",
                needs=backbone_needs("vit_b_16"), docs="docs/vision.md",
                inference="predict --checkpoint {checkpoint} {data} --out {out}/predictions.csv")
@click.group(STACK, help=__doc__)
def cli() -> None:
    pass


cli.add_command(
    make_train_command(
        STACK, "multiclass", default_arch="vit_b_16", select="macro_f1", binary=False
    )
)
cli.add_command(make_evaluate_command(STACK))
cli.add_command(make_predict_command(STACK))
cli.add_command(make_attention_command(STACK))


if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.landcover [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.landcover")
