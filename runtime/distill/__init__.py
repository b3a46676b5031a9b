"""Spectrogram GAN augmentation and knowledge distillation (the ``emotion-distill`` stack).

Small modules, one job each:

- ``spectrogram``: dB spectrograms to network inputs and back (GAN images, student images);
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
  JSON and a bar chart.

Nothing here is imported by ``import runtime`` or by ``bundle run --help``: the
stack module imports these inside its commands, and these import torch themselves.
"""
