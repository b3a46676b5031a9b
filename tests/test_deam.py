"""DEAM layouts, the seeded split, and the on-disk spectrogram cache."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from runtime.data import audio
from runtime.data.audio import MelParams, log_mel_of_file
from runtime.data.deam import (
    DeamLayoutError,
    SongFeatureDataset,
    read_songs,
    songs_from_files,
    split_songs,
)
from runtime.data.feature_cache import FeatureCache
from tests.synthetic_deam import make_deam

MEL = MelParams(sample_rate=16000, n_mels=32, n_fft=512, hop_length=256, duration=None)


@pytest.fixture(scope="module")
def deam(tmp_path_factory):
    return make_deam(tmp_path_factory.mktemp("deam"), n_songs=12, seconds=1.0)


def test_reads_the_real_deam_layout_with_both_annotation_files(deam):
    songs = read_songs(deam.root)
    assert [s.song_id for s in songs] == sorted(deam.labels, key=int)
    assert any(int(s.song_id) >= 2000 for s in songs)  # from ..._2000_2058.csv
    for song in songs:
        v, a = deam.labels[song.song_id]
        assert song.valence == pytest.approx((v - 5) / 4) and song.arousal == pytest.approx(
            (a - 5) / 4
        )
        assert -1 <= song.valence <= 1 and song.audio == deam.audio[song.song_id]


def test_plain_layout_with_1_to_9_labels_is_mapped_to_unit_range(tmp_path):
    data = make_deam(tmp_path / "plain", n_songs=4, seconds=0.5, layout="plain")
    songs = read_songs(data.root)
    got = {s.song_id: (s.valence, s.arousal) for s in songs}
    assert set(got) == set(data.labels)
    for song_id, pair in got.items():
        assert pair == pytest.approx(data.unit_labels(song_id)), song_id


def test_plain_layout_with_unit_labels_is_kept(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("file, valence, arousal\na.wav, -0.5, 0.25\n")
    [song] = read_songs(tmp_path)
    assert (song.song_id, song.valence, song.arousal) == ("a", -0.5, 0.25)
    with pytest.raises(DeamLayoutError, match="labels.csv.*unit"):
        (tmp_path / "labels.csv").write_text("file,valence,arousal\na.wav,-0.5,3\n")
        read_songs(tmp_path, label_scale="unit")


def test_unknown_folder_names_what_it_expected(tmp_path):
    with pytest.raises(DeamLayoutError, match=rf"{tmp_path}.*MEMD_audio.*labels.csv"):
        read_songs(tmp_path)


def test_split_is_seeded_by_song_id_and_disjoint(deam):
    songs = read_songs(deam.root)
    train, val = split_songs(songs, val_fraction=0.25, seed=3)
    assert len(val) == 3 and {s.song_id for s in train} | {s.song_id for s in val} == set(
        deam.labels
    )
    assert not {s.song_id for s in train} & {s.song_id for s in val}
    again_train, again_val = split_songs(list(reversed(songs)), val_fraction=0.25, seed=3)
    assert [s.song_id for s in again_val] == [s.song_id for s in val]
    assert [s.song_id for s in split_songs(songs, val_fraction=0.25, seed=4)[1]] != [
        s.song_id for s in val
    ]


def test_mp3_files_are_decoded(tmp_path):
    data = make_deam(tmp_path / "mp3", n_songs=2, seconds=0.5, audio_format="mp3")
    songs = read_songs(data.root)
    assert all(s.audio.suffix == ".mp3" for s in songs)
    spec = log_mel_of_file(songs[0].audio, MEL)
    assert spec.shape[0] == 32 and spec.shape[1] >= 30 and spec.max() == 0.0


def test_spectrograms_are_decoded_once_then_read_from_the_cache(deam, tmp_path, monkeypatch):
    songs = read_songs(deam.root)
    cache = FeatureCache(
        tmp_path / "cache", params=MEL.as_dict(), compute=lambda p: log_mel_of_file(p, MEL)
    )
    loader = DataLoader(
        SongFeatureDataset(songs, cache, frames=64, pad_value=-80.0), batch_size=4, shuffle=True
    )

    before = audio.DECODE_CALLS
    first = {tuple(t.tolist()): x for xb, tb in loader for x, t in zip(xb, tb, strict=True)}
    assert audio.DECODE_CALLS - before == len(songs)

    # Epoch 2: any decoding attempt fails loudly.
    import librosa

    def no_decoding(*args, **kwargs):
        raise AssertionError("audio decoded after the first epoch")

    monkeypatch.setattr(librosa, "load", no_decoding)
    second = {tuple(t.tolist()): x for xb, tb in loader for x, t in zip(xb, tb, strict=True)}
    assert audio.DECODE_CALLS - before == len(songs)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert next(iter(second.values())).shape == (32, 64)

    # A new process (a new cache object on the same folder) reads the files from disk too.
    reopened = FeatureCache(
        tmp_path / "cache", params=MEL.as_dict(), compute=lambda p: log_mel_of_file(p, MEL)
    )
    reopened.get(songs[0].audio)
    assert (reopened.hits, reopened.misses) == (1, 0)


def test_cache_key_follows_content_and_parameters(deam, tmp_path):
    songs = read_songs(deam.root)
    cache = FeatureCache(
        tmp_path / "c", params=MEL.as_dict(), compute=lambda p: log_mel_of_file(p, MEL)
    )
    copy = tmp_path / "renamed.wav"
    copy.write_bytes(songs[0].audio.read_bytes())
    cache.get(songs[0].audio)
    cache.get(copy)  # same bytes under another name: a hit
    assert (cache.hits, cache.misses) == (1, 1)
    other = MelParams(**{**MEL.__dict__, "n_mels": 16})
    other_cache = FeatureCache(
        tmp_path / "c", params=other.as_dict(), compute=lambda p: log_mel_of_file(p, other)
    )
    assert other_cache.get(copy).shape[0] == 16 and other_cache.misses == 1


def test_predict_inputs_accept_files_and_folders(deam, tmp_path):
    songs = songs_from_files([deam.root / "DEAM_audio"])
    assert len(songs) == len(deam.labels) and all(np.isnan(s.valence) for s in songs)
    with pytest.raises(DeamLayoutError, match="nope.mp3"):
        songs_from_files([tmp_path / "nope.mp3"])


def test_kaggle_copies_with_underscored_annotation_folders_are_read(tmp_path):
    # Some DEAM copies name the folder "annotations_averaged_per_song" instead of
    # "annotations averaged per song".
    data = make_deam(tmp_path / "deam", n_songs=4, seconds=0.5)
    annotations = data.root / "DEAM_Annotations" / "annotations"
    (annotations / "annotations averaged per song").rename(
        annotations / "annotations_averaged_per_song"
    )
    assert sorted(s.song_id for s in read_songs(data.root)) == sorted(data.labels)
