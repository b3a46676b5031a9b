"""Data sets the stacks train on, and the on-disk feature cache.

- ``audio``: decoding (librosa, counted) and log-mel spectrograms;
- ``feature_cache``: features computed once per (file content, parameters) and
  kept on disk, so epochs after the first decode no audio;
- ``deam``: the DEAM music-emotion data set (real layout and a plain folder +
  CSV layout), seeded split by song, torch datasets over cached features.

Nothing heavy is imported here; each module imports numpy/torch/librosa inside
its functions.
"""
