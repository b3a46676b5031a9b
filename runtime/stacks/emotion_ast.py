"""emotion-ast: 16 kHz audio -> AST feature extractor -> Audio Spectrogram Transformer -> valence/arousal.

The recipe of the seed notebook, offline: audio decoded at the feature
extractor's rate, Kaldi-style filterbank features from the bundle's
``ASTFeatureExtractor`` (cached on disk after the first epoch), an ``ASTModel``
loaded with ``from_pretrained``, its pooled output ((CLS + distillation token)
/ 2) through a regression head (LayerNorm -> 512 -> 128 -> 2, dropout, tanh).

    bundle run emotion-ast train --data /kaggle/input/deam --out runs/ast --epochs 10
    bundle run emotion-ast evaluate --checkpoint runs/ast/best.pt --data /kaggle/input/deam
    bundle run emotion-ast predict --checkpoint runs/ast/best.pt song.mp3
"""

from __future__ import annotations

from runtime.emotion.audio_transformer import STACK
from runtime.stacks._emotion import emotion_stack

cli = emotion_stack(STACK, doc=__doc__,
                    summary="16 kHz audio -> Audio Spectrogram Transformer -> valence/arousal regression")

if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.emotion_ast [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.emotion_ast")
