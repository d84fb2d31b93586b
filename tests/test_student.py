"""The default model's distilled student (issue #20): it hears each track first, and the teacher
(musicnn) hears again only what the student hands on; every tag written is the teacher's."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tagger import audio, features
from tagger.models import progressive, registry, runtime
from tagger.models.student import Student

GTZAN = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gtzan"
needs_gtzan = pytest.mark.skipif(not GTZAN.is_dir(), reason="needs ../shared/datasets/gtzan")
HOW = progressive.Hearing()


@pytest.fixture(scope="module")
def model():
    return registry.load("gtzan-musicnn-openset")


class Counting:
    """Counts the patches each network is given (``window_rows``), then runs it."""

    def __init__(self, monkeypatch, model):
        self.teacher = self.student = 0
        teacher_rows, student_rows = model.window_rows, model.student.window_rows
        msd_rows = model.msd_rows

        def t(patches):
            self.teacher += len(patches)
            return teacher_rows(patches)

        def m(patches):
            self.teacher += len(patches)
            return msd_rows(patches)

        def s(patches):
            self.student += len(patches)
            return student_rows(patches)

        monkeypatch.setattr(model, "window_rows", t)
        monkeypatch.setattr(model, "msd_rows", m)
        monkeypatch.setattr(model.student, "window_rows", s)


def test_the_shipped_card_has_a_student_that_loads_without_tensorflow(model, student_on):
    entry = model.card.extra["student"]
    assert 0 <= entry["band"] < model.card.extra["threshold"]
    student = model.student
    assert isinstance(student, Student)
    assert student.decider.labels == model.decider.labels
    # its card: what it learnt from, how it was split, how to make it again, how it agrees
    for key in ("training", "split", "command", "held_out", "bands_on_learnt_tracks", "speed", "onnx"):
        assert entry[key], key
    assert entry["training"]["flops_per_patch"] < 0.1 * 5.6e9  # a tenth of the teacher's or less


@needs_gtzan
def test_the_student_reads_close_to_the_teachers_numbers(model, student_on):
    clip = audio.load_clip(GTZAN / "jazz" / "jazz.00003.mp3", "mp3")
    patches = np.concatenate([features.musicnn_window_patches(w, clip.sr) for w in clip.windows])
    teacher, student = model.window_rows(patches), model.student.window_rows(patches)
    assert student.shape == teacher.shape == (len(patches), 300)
    a, b = teacher[:, :200], student[:, :200]
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert np.median(cosine) > 0.7
    assert np.abs(teacher[:, 200:] - student[:, 200:]).mean() < 0.05  # tag activations


@needs_gtzan
def test_a_track_the_student_does_not_find_hopeless_is_the_teachers_to_answer(model, monkeypatch, student_on):
    path = GTZAN / "jazz" / "jazz.00003.mp3"
    runtime.set_student(False)
    alone = progressive.hear(model, path, "mp3", HOW)  # the teacher hears every track
    runtime.set_student(True)
    count = Counting(monkeypatch, model)
    reads = []
    real_read = audio.Reader.read

    def read(self, starts):
        reads.extend(starts)
        return real_read(self, starts)

    monkeypatch.setattr(audio.Reader, "read", read)
    heard = progressive.hear(model, path, "mp3", HOW)
    assert heard.by == "model" and heard.student_windows >= HOW.first
    assert count.student == heard.student_windows and count.teacher == heard.windows
    # the teacher's answer, exactly as it would have been alone; no window decoded twice
    assert heard.windows == alone.windows
    assert np.allclose(heard.probs, alone.probs)
    assert len(reads) == len(set(reads)) == max(heard.windows, heard.student_windows)


def test_music_the_student_cannot_name_never_reaches_the_teacher(model, monkeypatch, tmp_path, student_on):
    # a minute of noise bursts and a wandering tone: nothing the default has a genre for
    rng = np.random.default_rng(7)
    sr, seconds = 22050, 60
    t = np.arange(sr * seconds) / sr
    y = 0.2 * np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * 0.05 * t)) * t)
    y += 0.3 * rng.normal(0, 1, len(t)) * (np.sin(2 * np.pi * 0.5 * t) > 0.6)
    path = tmp_path / "odd.wav"
    sf.write(path, y.astype(np.float32), sr)
    count = Counting(monkeypatch, model)
    heard = progressive.hear(model, path, "wav", HOW)
    assert heard.by == "student" and count.teacher == 0 and count.student == heard.windows
    assert not model.student.hands_on(heard.probs)
    assert heard.probs.max() < model.card.extra["threshold"]  # untagged


def test_the_student_is_off_unless_asked_for(model):
    from tagger.config import load

    assert not runtime.wants_student() and model.student is None  # musicnn hears every track
    assert model.card.extra["student"]["default"] is False and model.card.extra["student"]["why_not_default"]
    assert load(environ={}, config_file=os.devnull).student is False
    on = load(environ={"TAGGER_STUDENT": "on"}, config_file=os.devnull)
    assert on.student is True and on.to_env()["TAGGER_STUDENT"] == "on"
    heard = progressive.hear(model, GTZAN / "jazz" / "jazz.00003.mp3", "mp3", HOW) if GTZAN.is_dir() else None
    assert heard is None or (heard.by == "model" and heard.student_windows == 0)


def test_the_student_gives_up_where_its_card_says_unless_told_never(model, student_on):
    student = model.student
    assert 0 < student.give_up < student.threshold
    assert student.hearing(HOW).give_up == max(HOW.give_up, student.give_up)
    never = progressive.Hearing(give_up=0.0)
    assert student.hearing(never).give_up == 0.0  # 0: never give up, for the student too


@needs_gtzan
def test_a_scan_with_the_student_writes_the_teachers_tags_and_leaves_the_rest_untagged(audio_factory, tmp_path):
    import json

    import audiofiles
    from services import run_cli

    from tagger import config, tags

    settings = config.load({"data_dir": tmp_path / "data", "workers": 1}, environ={}, config_file=tmp_path / "none.toml")
    lib = tmp_path / "lib"
    mine = {"title": ["Hum"], "artist": ["Nobody"]}
    hum = audio_factory("flac", name="lib/hum.flac", seconds=40, tags=mine, kind="hum")
    jazz = lib / "jazz.00002.mp3"
    jazz.write_bytes((GTZAN / "jazz" / "jazz.00002.mp3").read_bytes())
    before_tags, before_audio = audiofiles.all_tags(hum, "flac"), audiofiles.decode(hum, "flac")
    run = run_cli(settings, "scan", str(lib), "--json", TAGGER_STUDENT="on")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["tagged"] == 1 and summary["low_confidence"] == 1, summary
    warmed = [line for line in (settings.data_dir / "worker.log").read_text().splitlines() if "warmed up" in line]
    assert warmed and all("student first" in w for w in warmed), warmed
    ours = tags.read(jazz, "mp3")
    assert ours["genre"] == ["Jazz"] and float(ours["confidence"][0]) >= settings.min_confidence
    # nothing written into the file it could not name; its audio and the user's tags untouched
    assert audiofiles.all_tags(hum, "flac") == before_tags
    assert not any(tags.read(hum, "flac").values())
    np.testing.assert_array_equal(audiofiles.decode(hum, "flac"), before_audio)
