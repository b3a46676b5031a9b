"""Vision code shared by the `landcover`, `flood` and `masked-ssl` stacks.

One module per job, imported by the stacks inside their commands (each module
imports torch itself, so importing this package stays cheap):

- ``errors``: the error classes the vision stacks raise;
- ``images``: image-folder datasets (labelled, unlabelled, time series) and transforms;
- ``architectures``: a registry of classifier architectures (torchvision ViT-B/16 and
  MobileNetV3 loaded through the unmodified ``weights=`` API, and our own U-Net CNN);
- ``unet``: the U-Net used for masked-image-modelling and temporal pre-training;
- ``masking``: random patch masks and the masked-pixel loss;
- ``attention``: per-layer, per-head attention capture for torchvision ViTs,
  attention rollout and overlays;
- ``classify``: the training recipe shared by landcover and flood;
- ``inference``: a trained classifier rebuilt from its checkpoint, evaluated, run on images;
- ``reports``: metrics and confusion-matrix files;
- ``pretrain``: masked-image-modelling and temporal pre-training (masked-ssl);
- ``commands``, ``attention_command``: the click commands landcover and flood share.

Shared runtime code: imports runtime.train and the runtime core, never a stack.
"""
