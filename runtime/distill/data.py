"""Training data of the student: real songs, GAN samples, and the teacher's outputs for each.

Every item has the shape of the real features (``(n_mels, frames)`` dB), so
real and generated spectrograms share batches. GAN images are kept at their
own (small) size and resized when an item is read.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from runtime.data.spectrogram import resize_db


class GeneratedSpectrograms(Dataset):
    """GAN samples ``(N, H, W)`` in dB, labelled by their conditioning ``(N, 2)``.

    Items are ``(spec (n_mels, frames), label (2,))`` like :class:`~runtime.data.deam.SongFeatureDataset`.
    """

    def __init__(self, spec_db: torch.Tensor, labels: torch.Tensor, *, shape: tuple[int, int]):
        if len(spec_db) != len(labels):
            raise ValueError(f"{len(spec_db)} samples but {len(labels)} labels")
        self.spec_db = spec_db
        self.labels = labels.float()
        self.shape = shape

    def __len__(self) -> int:
        return len(self.spec_db)

    def __getitem__(self, index: int):
        spec = resize_db(self.spec_db[index : index + 1], self.shape)[0]
        return spec, self.labels[index]


class WithTeacher(Dataset):
    """Items of ``base`` extended with the teacher's prediction and pooled feature.

    ``(spec, label)`` -> ``(spec, label, teacher_pred, teacher_feature)``.
    """

    def __init__(self, base: Dataset, teacher_pred: torch.Tensor, teacher_features: torch.Tensor):
        if not len(base) == len(teacher_pred) == len(teacher_features):
            raise ValueError("one teacher output per item is needed")
        self.base = base
        self.teacher_pred = teacher_pred
        self.teacher_features = teacher_features

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        spec, label = self.base[index]
        return spec, label, self.teacher_pred[index], self.teacher_features[index]
