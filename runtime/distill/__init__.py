"""Spectrogram GAN augmentation and knowledge distillation (the ``emotion-distill`` stack).

Small modules, one job each:

- ``gan``: the conditional (valence, arousal) generator and projection discriminator;
- ``gan_training``: the GAN loop with its stabilisers (lower discriminator LR,
  one-sided label smoothing, decaying instance noise, update ratio, clipping),
  per-epoch D(real)/D(fake) and sample grids;
- ``student``: a timm MobileViT backbone + the emotion regression head, its
  pretrained weights taken from the bundle or refused loudly;
- ``losses``: supervised + output distillation + feature distillation;
- ``teacher``: the emotion-vit teacher's predictions and pooled features;
- ``data``: GAN samples as a data set labelled by their conditioning, and items
  extended with the teacher's outputs;
- ``report``: teacher/student comparison (CCC, parameters, sizes, latency) as
  JSON and a bar chart;
- ``common``, ``augment``, ``run``: the stack's three steps (train-gan; distill
  and evaluate) and what they share (the teacher's songs, split and cache).

dB spectrograms as network inputs are ``runtime.data.spectrogram`` (emotion-vit's
teacher uses the same conversion). Shared runtime code: imports runtime.emotion (the
teacher is a trained emotion-vit), runtime.train and runtime.data, never a stack.

Nothing here is imported by ``import runtime``. The stack module imports ``common``,
``augment`` and ``run`` at start; they import torch and the other modules here inside
their functions, so ``bundle run --help`` stays fast.
"""
