"""Audio decoding and log-mel spectrograms (librosa).

Every decode goes through :func:`load_audio`, which counts calls in
``DECODE_CALLS``: the feature cache is tested by asserting that this counter
does not move after the first epoch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from runtime.errors import AudioDecodeError

if TYPE_CHECKING:
    import numpy as np

#: Extensions the loaders accept (decoded by libsndfile; mp3 needs libsndfile >= 1.1).
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg")

#: Number of audio files decoded in this process (see module docstring).
DECODE_CALLS = 0


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
        AudioDecodeError: the file is missing, unreadable, empty or not audio that
            libsndfile or audioread can decode; the message names the file and why.
            Any other error (e.g. of the environment, not of the file) passes unchanged.
    """
    global DECODE_CALLS
    import warnings

    import librosa

    DECODE_CALLS += 1
    head = _file_head(path)
    try:
        with warnings.catch_warnings():
            # librosa's "PySoundFile failed. Trying audioread instead." and the deprecation
            # of that fallback: the error below says what matters, once.
            warnings.simplefilter("ignore")
            y, _sr = librosa.load(path, sr=sample_rate, mono=True, offset=offset, duration=duration)
    except Exception as exc:  # soundfile and audioread raise many kinds; only those are the file's
        if not _is_decode_failure(exc):
            raise
        raise AudioDecodeError(
            f"cannot decode audio file {path}: {_decode_reason(exc, head)}. Replace or remove "
            "the file, or leave unreadable files out with --skip-bad-files"
        ) from exc
    if y.size == 0:
        raise AudioDecodeError(f"audio file {path} holds no samples after offset {offset} s")
    return y


def _file_head(path: str | os.PathLike) -> bytes:
    """The first bytes of the file (for the error message); AudioDecodeError when the file
    cannot be read at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise AudioDecodeError(f"audio file {path} does not exist") from None
    except IsADirectoryError:
        raise AudioDecodeError(f"audio file {path} is a folder, not a file") from None
    except OSError as exc:
        raise AudioDecodeError(f"cannot read audio file {path}: {exc.strerror or exc}") from None
    if not head:
        raise AudioDecodeError(f"audio file {path} is empty (0 bytes)")
    return head


def _is_decode_failure(exc: BaseException | None) -> bool:
    """An error of the decoders (libsndfile, audioread) or of reading the stream, anywhere
    in the chain; not one of numba, memory or the environment."""
    seen = 0
    while exc is not None and seen < 10:
        module = (type(exc).__module__ or "").split(".")[0]
        if module in ("soundfile", "audioread") or isinstance(exc, EOFError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _decode_reason(exc: BaseException, head: bytes) -> str:
    """Why: the decoders' own words where they have any, and what the file starts with."""
    names, words = [], []
    chain: BaseException | None = exc
    for _ in range(10):
        if chain is None:
            break
        names.append(type(chain).__name__)
        text = str(chain).strip()
        # libsndfile says "File does not exist or is not a regular file" for any format it
        # does not know: the file exists (it was read above), so that part misleads.
        if text and "does not exist or is not a regular file" not in text:
            words.append(text)
        chain = chain.__cause__ or chain.__context__
    printable = all(32 <= b < 127 or b in (9, 10, 13) for b in head)
    what = f"it starts with {head[:12]!r}" + (" (text, not audio)" if printable else "")
    said = f"; {words[0]}" if words else ""
    return (f"not audio that libsndfile or audioread can decode ({' <- '.join(dict.fromkeys(names))}"
            f"{said}); {what}")


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
