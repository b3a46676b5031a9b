"""Audio decoding and log-mel spectrograms (librosa).

Every decode goes through :func:`load_audio`, which counts calls in
``DECODE_CALLS``: the feature cache is tested by asserting that this counter
does not move after the first epoch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Extensions the loaders accept (decoded by libsndfile; mp3 needs libsndfile >= 1.1).
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg")

#: Number of audio files decoded in this process (see module docstring).
DECODE_CALLS = 0


class AudioDecodeError(RuntimeError):
    """An audio file could not be decoded."""


def load_audio(
    path: str | os.PathLike, *, sample_rate: int, offset: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """Decode a file to mono float32 at ``sample_rate``.

    Args:
        path: an mp3/wav/flac/ogg file.
        sample_rate: resample to this rate.
        offset: seconds to skip at the start (DEAM clips start at 15 s in the
            annotations; the audio files hold the 45 s excerpts).
        duration: seconds to keep; None keeps the rest.

    Raises:
        AudioDecodeError: the file is missing or not decodable (names the file).
    """
    global DECODE_CALLS
    import librosa

    DECODE_CALLS += 1
    try:
        y, _sr = librosa.load(path, sr=sample_rate, mono=True, offset=offset, duration=duration)
    except Exception as exc:  # soundfile and audioread raise many kinds
        raise AudioDecodeError(f"cannot decode audio file {path}: {exc}") from exc
    if y.size == 0:
        raise AudioDecodeError(f"audio file {path} holds no samples after offset {offset} s")
    return y


@dataclass(frozen=True)
class MelParams:
    """Parameters of the log-mel spectrogram (part of the cache key)."""

    sample_rate: int = 22050
    n_mels: int = 128
    n_fft: int = 2048
    hop_length: int = 512
    offset: float = 0.0
    duration: float | None = 30.0
    top_db: float = 80.0

    def as_dict(self) -> dict:
        return {"kind": "log-mel", **asdict(self)}


def log_mel(y: np.ndarray, params: MelParams) -> np.ndarray:
    """Log-mel power spectrogram in dB relative to the clip's maximum, shape (n_mels, frames).

    Values lie in ``[-top_db, 0]``.
    """
    import librosa
    import numpy as np

    mel = librosa.feature.melspectrogram(
        y=y,
        sr=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
    )
    return librosa.power_to_db(mel, ref=np.max, top_db=params.top_db).astype(np.float32)


def log_mel_of_file(path: str | os.PathLike, params: MelParams) -> np.ndarray:
    """Decode ``path`` and return its log-mel spectrogram (see :func:`log_mel`)."""
    y = load_audio(
        path, sample_rate=params.sample_rate, offset=params.offset, duration=params.duration
    )
    return log_mel(y, params)
