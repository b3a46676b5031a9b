"""A synthetic DEAM-shaped data set whose labels are a known function of the audio.

Each song is a sustained tone accented by short pulses: the pitch of the tone
sets valence, the tempo of the pulses sets arousal (both on DEAM's 1–9 scale)::

    valence = 1 + 8 * log(pitch / 200 Hz) / log(3000 Hz / 200 Hz)
    arousal = 1 + 8 * (tempo - 60 bpm) / (240 bpm - 60 bpm)

``make_deam(root)`` writes the real DEAM layout with its quirks (headers with a
space after each comma, non-contiguous ids, a second annotation file for ids
>= 2000 with extra columns); ``layout="plain"`` writes ``labels.csv`` + ``audio/``.
Audio is wav by default; ``audio_format="mp3"`` writes mp3 through libsndfile.

Used by the emotion and distillation stack tests; importable as
``from tests.synthetic_deam import make_deam``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

PITCH_RANGE = (200.0, 3000.0)  # Hz
TEMPO_RANGE = (60.0, 240.0)  # beats per minute
ANNOTATIONS = Path("DEAM_Annotations/annotations/annotations averaged per song/song_level")
AUDIO = Path("DEAM_audio/MEMD_audio")
HEADER_1 = "song_id, valence_mean, valence_std, arousal_mean, arousal_std"
HEADER_2 = (
    "song_id, valence_mean, valence_std, valence_max_mean, valence_max_std, valence_min_mean, "
    "valence_min_std, arousal_mean, arousal_std, arousal_max_mean, arousal_max_std, "
    "arousal_min_mean, arousal_min_std"
)


@dataclass
class SyntheticDeam:
    """What was written: the folder and each song's labels on the 1–9 scale."""

    root: Path
    labels: dict[str, tuple[float, float]] = field(default_factory=dict)
    audio: dict[str, Path] = field(default_factory=dict)

    def unit_labels(self, song_id: str) -> tuple[float, float]:
        """The song's (valence, arousal) mapped to [-1, 1]."""
        v, a = self.labels[song_id]
        return (v - 5) / 4, (a - 5) / 4


def labels_for(pitch_hz: float, tempo_bpm: float) -> tuple[float, float]:
    """(valence, arousal) on the 1–9 scale for a pitch and a tempo."""
    lo, hi = PITCH_RANGE
    valence = 1 + 8 * math.log(pitch_hz / lo) / math.log(hi / lo)
    arousal = 1 + 8 * (tempo_bpm - TEMPO_RANGE[0]) / (TEMPO_RANGE[1] - TEMPO_RANGE[0])
    return round(valence, 4), round(arousal, 4)


def pulse_train(
    pitch_hz: float, tempo_bpm: float, *, seconds: float, sample_rate: int
) -> np.ndarray:
    """A sustained tone (with one overtone) accented by 80 ms pulses at ``tempo_bpm``, float32 mono."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = np.sin(2 * np.pi * pitch_hz * t) + 0.3 * np.sin(4 * np.pi * pitch_hz * t)
    beat = 60.0 / tempo_bpm
    gate = 0.2 + 0.8 * ((t % beat) < 0.08)  # the pitch stays visible between the beats
    noise = np.random.default_rng(int(pitch_hz * 1000 + tempo_bpm)).normal(0, 1e-3, t.shape)
    return (0.4 * tone * gate + noise).astype(np.float32)


def make_deam(
    root: str | Path,
    n_songs: int = 48,
    *,
    seconds: float = 2.0,
    sample_rate: int = 16000,
    seed: int = 0,
    audio_format: str = "wav",
    layout: str = "deam",
) -> SyntheticDeam:
    """Write a synthetic data set; see the module docstring.

    Args:
        root: the folder to create.
        n_songs: how many songs (about a sixth get ids >= 2000, in the second file).
        seconds: clip length.
        sample_rate: audio sample rate.
        seed: picks ids, pitches and tempos.
        audio_format: "wav" or "mp3".
        layout: "deam" (the real release's layout) or "plain" (labels.csv + audio/).
    """
    root = Path(root)
    rng = random.Random(seed)
    n_high = max(1, n_songs // 6)
    ids = sorted(rng.sample(range(2, 2000), n_songs - n_high)) + sorted(
        rng.sample(range(2000, 2059), n_high)
    )
    data = SyntheticDeam(root)
    audio_dir = root / (AUDIO if layout == "deam" else Path("audio"))
    audio_dir.mkdir(parents=True, exist_ok=True)
    for i, song_id in enumerate(ids):
        # Stratified draws so that every split covers the label range.
        u_pitch = (i + rng.random()) / n_songs
        u_tempo = rng.random()
        pitch = PITCH_RANGE[0] * (PITCH_RANGE[1] / PITCH_RANGE[0]) ** u_pitch
        tempo = TEMPO_RANGE[0] + (TEMPO_RANGE[1] - TEMPO_RANGE[0]) * u_tempo
        path = audio_dir / f"{song_id}.{audio_format}"
        sf.write(
            path,
            pulse_train(pitch, tempo, seconds=seconds, sample_rate=sample_rate),
            sample_rate,
            format=audio_format.upper(),
        )
        data.labels[str(song_id)] = labels_for(pitch, tempo)
        data.audio[str(song_id)] = path
    if layout == "deam":
        _write_deam_annotations(root, data, ids)
    elif layout == "plain":
        lines = ["file,valence,arousal"] + [
            f"audio/{data.audio[str(s)].name},{data.labels[str(s)][0]},{data.labels[str(s)][1]}"
            for s in ids
        ]
        (root / "labels.csv").write_text("\n".join(lines) + "\n")
    else:
        raise ValueError(f"layout must be 'deam' or 'plain', not {layout!r}")
    return data


def _write_deam_annotations(root: Path, data: SyntheticDeam, ids: list[int]) -> None:
    folder = root / ANNOTATIONS
    folder.mkdir(parents=True, exist_ok=True)
    first = [HEADER_1]
    second = [HEADER_2]
    for song_id in ids:
        v, a = data.labels[str(song_id)]
        if song_id < 2000:
            first.append(f"{song_id}, {v}, 0.9, {a}, 1.1")
        else:
            second.append(
                f"{song_id}, {v}, 0.9, {v + 0.5}, 0.4, {v - 0.5}, 0.4, {a}, 1.1, {a + 0.5}, 0.3, {a - 0.5}, 0.3"
            )
    (folder / "static_annotations_averaged_songs_1_2000.csv").write_text("\n".join(first) + "\n")
    (folder / "static_annotations_averaged_songs_2000_2058.csv").write_text(
        "\n".join(second) + "\n"
    )
