"""The DEAM music-emotion data set: songs, static valence/arousal labels, datasets.

Two layouts are read:

- the real DEAM release (as unpacked from the official zips or Kaggle)::

      ROOT/DEAM_audio/MEMD_audio/<song_id>.mp3
      ROOT/DEAM_Annotations/annotations/annotations averaged per song/song_level/
          static_annotations_averaged_songs_1_2000.csv
          static_annotations_averaged_songs_2000_2058.csv

  CSV headers carry a space after each comma (``song_id, valence_mean, ...``),
  the second file has extra columns, song ids are not contiguous, and labels
  are on the 1–9 SAM scale;

- a plain layout for your own data: ``ROOT/labels.csv`` with columns
  ``file`` (audio path relative to ROOT) or ``song_id`` (audio found as
  ``ROOT/audio/<song_id>.<ext>``), ``valence`` and ``arousal``, on the 1–9
  scale or already in [-1, 1].

Labels are mapped to [-1, 1] (``(x - 5) / 4`` for the 1–9 scale), the range of
the stacks' tanh output.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.data.audio import AUDIO_EXTENSIONS
from runtime.errors import DeamLayoutError

if TYPE_CHECKING:
    import numpy as np

    from runtime.data.feature_cache import FeatureCache

ANNOTATION_GLOB = "static_annotations_averaged_songs_*.csv"
AUDIO_DIR_NAME = "MEMD_audio"
PLAIN_LABELS = "labels.csv"
LABEL_NAMES = ("valence", "arousal")


@dataclass(frozen=True)
class Song:
    """One audio file and its labels in [-1, 1] (NaN when unlabelled, e.g. for predict)."""

    song_id: str
    audio: Path
    valence: float = math.nan
    arousal: float = math.nan


def scale_1_9(value: float) -> float:
    """Map the 1–9 SAM scale to [-1, 1]."""
    return (value - 5.0) / 4.0


def read_songs(root: str | os.PathLike, *, label_scale: str = "auto") -> list[Song]:
    """Read a data folder in the DEAM layout or the plain layout (see module docstring).

    Args:
        root: the data folder.
        label_scale: for the plain layout: "1-9", "unit" ([-1, 1] already) or
            "auto" (1–9 when every label is in [1, 9] and one exceeds 1).
            DEAM annotations are always on the 1–9 scale.

    Returns:
        The songs, sorted by id (numerically where ids are numbers).

    Raises:
        DeamLayoutError: naming the folder and the files it expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise DeamLayoutError(f"data folder {root} does not exist")
    if (root / PLAIN_LABELS).is_file():
        songs = _read_plain(root, label_scale)
    else:
        songs = _read_deam(root)
    return sorted(songs, key=_id_order)


def _id_order(song: Song) -> tuple:
    return (0, int(song.song_id), "") if song.song_id.isdigit() else (1, 0, song.song_id)


def _rows(csv_path: Path) -> list[dict[str, str]]:
    # skipinitialspace: DEAM writes "song_id, valence_mean, ..." (space after each comma).
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        return [
            {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in csv.DictReader(fh, skipinitialspace=True)
        ]


def _read_deam(root: Path) -> list[Song]:
    annotation_files = sorted(root.rglob(ANNOTATION_GLOB))
    audio_dirs = sorted(p for p in root.rglob(AUDIO_DIR_NAME) if p.is_dir())
    if not annotation_files or not audio_dirs:
        raise DeamLayoutError(
            f"{root} is neither a DEAM folder (needs DEAM_audio/{AUDIO_DIR_NAME}/ and "
            f"DEAM_Annotations/.../{ANNOTATION_GLOB}) nor a plain folder (needs {PLAIN_LABELS}); "
            f"found annotations: {len(annotation_files)}, audio folders: {len(audio_dirs)}"
        )
    audio_dir = audio_dirs[0]
    audio = _audio_by_stem(audio_dir)
    songs: dict[str, Song] = {}
    missing: list[str] = []
    for csv_path in annotation_files:
        for line, row in enumerate(_rows(csv_path), start=2):
            try:
                song_id = str(int(float(row["song_id"])))
                valence, arousal = float(row["valence_mean"]), float(row["arousal_mean"])
            except (KeyError, ValueError) as exc:
                raise DeamLayoutError(
                    f"{csv_path}, line {line}: needs song_id, valence_mean, arousal_mean ({exc})"
                ) from exc
            if song_id not in audio:
                missing.append(song_id)
                continue
            songs[song_id] = Song(song_id, audio[song_id], scale_1_9(valence), scale_1_9(arousal))
    if not songs:
        raise DeamLayoutError(
            f"no annotated song of {', '.join(map(str, annotation_files))} has an audio file in "
            f"{audio_dir} (looked for <song_id>{{{','.join(AUDIO_EXTENSIONS)}}})"
        )
    if missing:
        import warnings

        warnings.warn(
            f"{len(missing)} annotated songs have no audio in {audio_dir} and are left out "
            f"(first: {', '.join(missing[:5])})",
            stacklevel=3,
        )
    return list(songs.values())


def _audio_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_EXTENSIONS}


def _read_plain(root: Path, label_scale: str) -> list[Song]:
    csv_path = root / PLAIN_LABELS
    rows = _rows(csv_path)
    if not rows:
        raise DeamLayoutError(f"{csv_path} has no rows")
    columns = set(rows[0])
    if not {"valence", "arousal"} <= columns or not ({"file", "song_id"} & columns):
        raise DeamLayoutError(
            f"{csv_path} needs columns file (or song_id), valence, arousal; it has {', '.join(sorted(columns))}"
        )
    by_stem = _audio_by_stem(root / "audio") if (root / "audio").is_dir() else {}
    raw: list[tuple[str, Path, float, float]] = []
    for line, row in enumerate(rows, start=2):
        if row.get("file"):
            audio = root / row["file"]
            song_id = row.get("song_id") or Path(row["file"]).stem
        else:
            song_id = row["song_id"]
            if song_id not in by_stem:
                raise DeamLayoutError(f"{csv_path}, line {line}: no audio/{song_id}.* in {root}")
            audio = by_stem[song_id]
        if not audio.is_file():
            raise DeamLayoutError(f"{csv_path}, line {line}: audio file {audio} does not exist")
        try:
            raw.append((song_id, audio, float(row["valence"]), float(row["arousal"])))
        except ValueError as exc:
            raise DeamLayoutError(f"{csv_path}, line {line}: {exc}") from exc
    values = [v for _, _, va, ar in raw for v in (va, ar)]
    if label_scale == "auto":
        label_scale = "1-9" if min(values) >= 1 and max(values) > 1 else "unit"
    if label_scale == "1-9":
        bad = [v for v in values if not 1 <= v <= 9]
        convert = scale_1_9
    elif label_scale == "unit":
        bad = [v for v in values if not -1 <= v <= 1]
        convert = float
    else:
        raise DeamLayoutError(f"label scale must be auto, 1-9 or unit, not {label_scale!r}")
    if bad:
        raise DeamLayoutError(
            f"{csv_path}: labels outside the {label_scale} scale (e.g. {bad[0]}); "
            "use --label-scale to say which scale the file uses"
        )
    return [Song(sid, audio, convert(va), convert(ar)) for sid, audio, va, ar in raw]


def songs_from_files(paths: Sequence[str | os.PathLike]) -> list[Song]:
    """Unlabelled songs for prediction; folders are expanded to their audio files.

    Raises:
        DeamLayoutError: a path does not exist, or a folder holds no audio file.
    """
    songs: list[Song] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in AUDIO_EXTENSIONS]
            if not files:
                raise DeamLayoutError(
                    f"folder {path} holds no audio file ({', '.join(AUDIO_EXTENSIONS)})"
                )
            songs += [Song(str(p), p) for p in files]
        elif path.is_file():
            songs.append(Song(str(path), path))
        else:
            raise DeamLayoutError(f"audio file {path} does not exist")
    return songs


def split_songs(
    songs: Sequence[Song], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Song], list[Song]]:
    """Seeded train/validation split by song id (independent of listing order).

    Returns:
        ``(train, val)``, each sorted by id; val has ``round(n * val_fraction)``
        songs (at least one when there are two or more).
    """
    ordered = sorted(songs, key=_id_order)
    rng = random.Random(seed)
    shuffled = ordered[:]
    rng.shuffle(shuffled)
    n_val = round(len(ordered) * val_fraction)
    if len(ordered) >= 2 and val_fraction > 0:
        n_val = min(max(1, n_val), len(ordered) - 1)
    val_ids = {s.song_id for s in shuffled[:n_val]}
    return [s for s in ordered if s.song_id not in val_ids], [
        s for s in ordered if s.song_id in val_ids
    ]


def fix_frames(features: np.ndarray, frames: int, pad_value: float) -> np.ndarray:
    """Crop or pad the last axis (time) to ``frames``."""
    import numpy as np

    n = features.shape[-1]
    if n >= frames:
        return features[..., :frames]
    pad = [(0, 0)] * (features.ndim - 1) + [(0, frames - n)]
    return np.pad(features, pad, constant_values=pad_value)


class SongFeatureDataset:
    """Map-style data set: ``(features tensor, [valence, arousal] tensor)`` per song.

    Features come from a :class:`~runtime.data.feature_cache.FeatureCache`, so
    only the first access to a song decodes audio. Works with any DataLoader
    (a torch ``Dataset`` needs only ``__len__`` and ``__getitem__``).

    Args:
        songs: the songs.
        cache: computes or reads the features of one audio file.
        frames: crop/pad the time axis (last) to this many frames; None keeps it.
        pad_value: value used for padding (the spectrogram floor, e.g. -80 dB).
    """

    def __init__(
        self,
        songs: Sequence[Song],
        cache: FeatureCache,
        *,
        frames: int | None = None,
        pad_value: float = 0.0,
    ) -> None:
        self.songs = list(songs)
        self.cache = cache
        self.frames = frames
        self.pad_value = pad_value

    def __len__(self) -> int:
        return len(self.songs)

    def __getitem__(self, index: int):
        import torch

        song = self.songs[index]
        features = self.cache.get(song.audio)
        if self.frames is not None:
            features = fix_frames(features, self.frames, self.pad_value)
        target = torch.tensor([song.valence, song.arousal], dtype=torch.float32)
        return torch.from_numpy(features.copy()), target

    def targets(self):
        """All labels as an (N, 2) tensor."""
        import torch

        return torch.tensor([[s.valence, s.arousal] for s in self.songs], dtype=torch.float32)
