"""Loaders and the feature cache, on the shared GTZAN copy and on audio made here."""
from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import soundfile as sf

import audiofiles
from tagger import audio, features
from training import cache, datasets
from training.experiments import grouped_folds


def test_gtzan_groups_never_straddle_a_fold(gtzan):
    items = datasets.gtzan(gtzan)
    assert len(items) == 218
    assert items[0].group == "blues.00000-00004" and datasets.gtzan_group("jazz.00047", 10) == "jazz.00040-00049"
    for tr, te in grouped_folds(items, 5, seed=0):
        assert not {items[i].group for i in tr} & {items[i].group for i in te}
        assert set(tr).isdisjoint(te) and len(tr) + len(te) == len(items)
    # every genre has at least two groups of 5, so every fold's training side sees every genre
    for tr, _ in grouped_folds(items, 5, seed=0):
        assert {items[i].genre for i in tr} == set(datasets.GTZAN_GENRES)


def test_gtzan_split_lists(gtzan):
    train, valid = datasets.gtzan(gtzan, "train"), datasets.gtzan(gtzan, "valid")
    assert (len(train), len(valid)) == (125, 73)
    assert not {i.track_id for i in train} & {i.track_id for i in valid}
    assert "classical" not in datasets.labels_of(train) and "rock" not in datasets.labels_of(valid)


def test_fma_loader_reads_csv_and_layout(tmp_path):
    rows = [("000002", "Hip-Hop", "training"), ("000005", "Hip-Hop", "validation"),
            ("000140", "Folk", "training"), ("000999", "Folk", "training")]  # 000999: no audio
    for tid, genre, _ in rows[:3]:
        audiofiles.make_audio(tmp_path / genre, "mp3", f"{tid}.mp3", seconds=4.0)
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["track_id", "genre", "split"])
        w.writerows([(int(t), g, s) for t, g, s in rows])  # ids written unpadded on purpose
    every = datasets.fma(tmp_path)
    assert [(i.track_id, i.genre) for i in every] == [("000002", "Hip-Hop"), ("000005", "Hip-Hop"), ("000140", "Folk")]
    assert [i.track_id for i in datasets.fma(tmp_path, "train")] == ["000002", "000140"]
    assert [i.track_id for i in datasets.fma(tmp_path, "valid")] == ["000005"]
    assert all(i.path.is_file() for i in every)


def test_folder_tree_and_csv(tmp_path):
    a = audiofiles.make_audio(tmp_path / "lib" / "ambient" / "sub", "flac", "a.flac", seconds=4.0)
    b = audiofiles.make_audio(tmp_path / "lib" / "techno", "ogg", "b.ogg", seconds=4.0)
    (tmp_path / "lib" / "techno" / "cover.jpg").write_bytes(b"not audio")
    tree = datasets.folder_tree(tmp_path / "lib")
    assert [(i.path, i.genre) for i in tree] == [(a, "ambient"), (b, "techno")]
    (tmp_path / "list.csv").write_text(f"path,genre\nlib/ambient/sub/a.flac,Ambient\n{b},Techno \n")
    listed = datasets.csv_list(tmp_path / "list.csv")
    assert [(i.path, i.genre) for i in listed] == [(a, "Ambient"), (b, "Techno")]
    assert datasets.load("folder", tmp_path / "lib") == tree


def test_cache_computes_once_and_matches_inference(tmp_path):
    src = audiofiles.make_audio(tmp_path, "wav", "song.wav", seconds=10.0, sr=22050, channels=1)
    cdir = tmp_path / "cache"
    first = cache.get(src, cdir)
    stored = sorted(cdir.rglob("*.npy"))
    assert [p.name for p in stored] == ["logmel.npy", "patches.npy", "stats.npy"]
    stamp = [p.stat().st_mtime_ns for p in stored]
    again = cache.get(src, cdir)  # a hit: nothing rewritten, same arrays
    assert [p.stat().st_mtime_ns for p in stored] == stamp
    for name in ("logmel", "patches", "stats"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    # 10 s holds three 3.04 s windows; each patch is the whole-track log-mel at 131-frame steps
    assert first.patches.shape == (3, 128, 128) and first.stats.shape == (114,)
    for k in range(3):
        np.testing.assert_allclose(first.patches[k], first.logmel[:, 131 * k: 131 * k + 128], atol=1e-3)
    # what inference computes from the decoded windows of this 22050 Hz WAV is what training cached
    clip = audio.load_clip(src)
    np.testing.assert_allclose(np.concatenate([features.mel_patches(w) for w in clip.windows]),
                               first.patches, atol=1e-3)
    np.testing.assert_allclose(features.mfcc_stats(clip.windows), first.stats, rtol=1e-4, atol=1e-4)
    # a changed file is a new key, recomputed
    copy = tmp_path / "copy.wav"
    shutil.copy(src, copy)
    key = cache.cache_key(copy)
    os.utime(copy, ns=(1, 1))
    assert cache.cache_key(copy) != key


def test_cache_skips_unreadable(tmp_path):
    good = audiofiles.make_audio(tmp_path / "x", "mp3", "good.mp3", seconds=4.0)
    bad = audiofiles.text_as_audio(tmp_path / "x")
    items = [datasets.Item(good, "x", "good", "good"), datasets.Item(bad, "x", "bad", "bad")]
    kept, feats, errors = cache.get_many(items, tmp_path / "cache", log=None)
    assert [i.track_id for i in kept] == ["good"] and set(feats) == {"good"} and set(errors) == {"bad"}


def test_artist_tags_name_taxonomy_genres():
    from training.tagged import genre_of

    assert genre_of("Romantic Classical") == "classical"
    assert genre_of("Female Fronted Metal") == "metal"
    assert genre_of("Thrash Metal") == "metal"
    assert genre_of("dnb") == "electronic"
    assert genre_of("House") == "electronic"
    assert genre_of("Orchestral") == "classical"
    assert genre_of("Classique") == "classical"
    for none in ("Soundtrack", "Game", "Other", "Psychedelic", "Game music", ""):
        assert genre_of(none) is None
    assert genre_of("Trap") is None  # whole words only: "rap" is not in "Trap"
    assert genre_of("Popcorn") is None


def test_artist_tagged_collection(tmp_path):
    """Files keep their artist's genre through the mapping; untagged, unmapped and short files are
    left out; a Frets on Fire song's two stems become one mixed file as long as the song."""
    import mutagen

    from training.openset_embed import csv_groups, source_items
    from training.tagged import collect

    pkg = tmp_path / "pkg-music"
    audiofiles.make_audio(pkg / "a", "ogg", "orch.ogg", seconds=22,
                          tags={"genre": ["Romantic Classical"], "artist": ["A. Composer"]})
    audiofiles.make_audio(pkg / "a", "ogg", "game.ogg", seconds=22, tags={"genre": ["Soundtrack"]})
    audiofiles.make_audio(pkg / "a", "ogg", "bare.ogg", seconds=22)
    audiofiles.make_audio(pkg / "a", "mp3", "jingle.mp3", seconds=5, tags={"genre": ["House"]})
    song = pkg / "songs" / "chaos"
    audiofiles.make_audio(song, "ogg", "song.ogg", seconds=21, tags={"genre": ["Death Metal"]})
    audiofiles.make_audio(song, "ogg", "guitar.ogg", seconds=21, tags={"genre": ["Death Metal"]}, kind="music")
    rows = collect([pkg], tmp_path / "out", log=lambda *_: None)
    got = {r["path"]: (r["genre"], r["group"], r["tag"]) for r in rows}
    assert got == {"pkg-music__a_orch.ogg": ("classical", "pkg-music/A. Composer", "Romantic Classical"),
                   "pkg-music__songs_chaos_song.ogg": ("metal", "pkg-music", "Death Metal")}
    mixed = tmp_path / "out" / "pkg-music__songs_chaos_song.ogg"
    assert not mixed.is_symlink() and abs(sf.info(mixed).duration - 21) < 0.2
    assert mutagen.File(mixed, easy=True)["genre"] == ["Death Metal"]  # tagger evaluate --from-tags reads it
    assert (tmp_path / "out" / "pkg-music__a_orch.ogg").resolve() == (pkg / "a" / "orch.ogg").resolve()
    items, name = source_items(str(tmp_path / "out" / "labels.csv"))
    assert name == "out"
    assert sorted((tid, g) for tid, g, _ in items) == [("pkg-music__a_orch.ogg", "classical"),
                                                       ("pkg-music__songs_chaos_song.ogg", "metal")]
    assert csv_groups(tmp_path / "out" / "labels.csv") == {"pkg-music__a_orch.ogg": "pkg-music/A. Composer",
                                                          "pkg-music__songs_chaos_song.ogg": "pkg-music"}
