"""What the distillation steps share: the teacher's songs and split, the feature cache,
checks that checkpoints fit together."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.emotion.recipe import feature_cache, scan_songs, song_dataset
from runtime.errors import DistillConfigError

STACK_NAME = "emotion-distill"
STUDENT_KIND = "student"
LOSS_PARTS_NAME = "loss_parts"


# --- shared set-up ---------------------------------------------------------------


def songs_and_split(data: Path, config: dict[str, Any]):
    """All songs and the teacher's (train, val) split of them."""
    from runtime.data.deam import read_songs, split_songs

    songs = read_songs(data, label_scale=config.get("label_scale", "auto"))
    train, val = split_songs(songs, val_fraction=config["val_fraction"], seed=config["seed"])
    return songs, train, val


def cache_dir(opts: dict[str, Any], teacher: Path, out: Path | None) -> Path:
    # The teacher's run already cached these spectrograms next to its checkpoint;
    # reuse them when that folder is writable (a miss writes), else start one in OUT.
    if opts.get("cache_dir"):
        return Path(opts["cache_dir"])
    beside = teacher.parent / "cache"
    if os.access(beside if beside.exists() else teacher.parent, os.W_OK):
        return beside
    return (out or Path.cwd()) / "cache"


@dataclass
class TeacherSongs:
    """The DEAM songs, split as the teacher was trained, and the feature cache of the
    teacher's spectrograms (every step reads the songs the way the teacher did)."""

    config: dict[str, Any]
    cache: Any
    all: list
    train: list
    val: list

    def usable(self, groups: list[list], ctx: Any, opts: dict[str, Any],
               say: Callable[[str], None]) -> list[list]:
        """Each group of songs less those whose audio does not decode (one scan for all:
        an error naming them, or a warning with --skip-bad-files)."""
        bad = scan_songs(self.cache, [s for group in groups for s in group], ctx, opts, say)
        return [[s for s in group if Path(s.audio) not in bad] for group in groups]

    def dataset(self, songs: list):
        """(spectrogram, label) of each song, from the cache."""
        return song_dataset(teacher_stack(), self.config, songs, self.cache)


def teacher_songs(opts: dict[str, Any], teacher: Path, config: dict[str, Any],
                  out: Path | None) -> TeacherSongs:
    """The songs of ``--data`` split by the teacher's settings, its cache (see
    :func:`cache_dir`)."""
    songs, train, val = songs_and_split(opts["data"], config)
    cache = feature_cache(teacher_stack(), config, cache_dir(opts, teacher, out))
    return TeacherSongs(config, cache, songs, train, val)


def teacher_stack():
    from runtime.emotion import vit as emotion_vit

    return emotion_vit.STACK


def same_features(a: dict[str, Any], b: dict[str, Any], what: str, teacher: Path) -> None:
    for key in ("mel", "frames", "val_fraction", "seed"):
        if a.get(key) != b.get(key):
            raise DistillConfigError(
                f"{what} was made with {key} = {a.get(key)!r}, the teacher {teacher} with "
                f"{b.get(key)!r}; use the teacher it was made from (a different split could "
                "put validation songs into training)"
            )


def single_process():
    from runtime.train.distributed import SINGLE_PROCESS

    return SINGLE_PROCESS


def teacher_provenance(path: Path, tcfg: dict[str, Any]) -> dict[str, Any]:
    """The teacher checkpoint (sha256 of the file) and the backbone it was trained from."""
    from runtime.provenance import of_local

    return of_local(path) | {"trained_from": (tcfg.get("provenance") or {}).get("backbone")}
