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

from runtime.emotion.audio_transformer import DEFAULT_MODEL, STACK
from runtime.emotion.commands import make_cli
from runtime.stacks.record import Need, register_stack

cli = register_stack(
    STACK.name, summary="16 kHz audio -> Audio Spectrogram Transformer -> valence/arousal regression",
    # train loads the backbone (--model: another artifact, or a local folder); evaluate and
    # predict rebuild the model from the checkpoint.
    needs=(Need("backbone", (DEFAULT_MODEL,), ("train",), option="model"),),
    docs="docs/emotion.md",
)(make_cli(STACK, doc=__doc__.split("\n\n")[0]))

if __name__ == "__main__":  # torchrun --nproc_per_node N -m runtime.stacks.emotion_ast [--strict] train ...
    from runtime.stacks.main import module_main

    module_main(cli, "runtime.stacks.emotion_ast")
