"""emotion-vit: log-mel spectrogram image -> ViT -> valence/arousal regression.

The recipe of the seed notebook, offline: librosa log-mel spectrograms (cached
on disk after the first epoch), resized to the backbone's image size and
normalised with its image processor's mean/std, a ``ViTModel`` loaded from the
bundle with ``from_pretrained``, the [CLS] embedding through a regression head
(LayerNorm -> 512 -> 128 -> 2, dropout, tanh). Model selection on the mean CCC
of valence and arousal over the whole validation set.

    bundle run emotion-vit train --data /kaggle/input/deam --out runs/vit --epochs 10
    bundle run emotion-vit evaluate --checkpoint runs/vit/best.pt --data /kaggle/input/deam
    bundle run emotion-vit predict --checkpoint runs/vit/best.pt song.mp3 --format csv
"""

from __future__ import annotations

from runtime.emotion.vit import STACK
from runtime.stacks._emotion import emotion_stack

cli = emotion_stack(STACK, doc=__doc__,
                    summary="log-mel spectrogram -> ViT -> valence/arousal regression")

if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.emotion_vit [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.emotion_vit")
