"""The beets plugin (beetsplug/audiogenre.py) against a real beets library: a temporary library.db
and music folder, real audio files, beets' own importer (``beet import -A``) and ``beet audiogenre``,
run as a user runs them (``python -m beets`` processes), with the shipped default chain.

Each run of ``beet`` that hears loads the model (seconds): the module shares one library through a
chain of module fixtures, import → pretend → force, three loads in all.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import audiofiles
import mutagen
import pytest

from tagger import tags

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "gtzan-musicnn-openset 2"

pytestmark = pytest.mark.slow


@dataclass
class Beets:
    """One beets installation in a folder: its config, library.db and music directory."""

    home: Path

    @property
    def db(self) -> Path:
        return self.home / "library.db"

    def configure(self, auto: bool) -> None:
        (self.home / "config.yaml").write_text(
            f"directory: {self.home / 'music'}\nlibrary: {self.db}\nplugins: [audiogenre]\nformat_item: $title\n"
            "import:\n  copy: yes\n  write: yes\n  quiet: yes\n"
            f"audiogenre:\n  auto: {'yes' if auto else 'no'}\n")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "BEETS"))}
        env.update({"BEETSDIR": str(self.home / "beetsdir"), "TAGGER_CONFIG": os.devnull,  # not the user's
                    "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
        run = subprocess.run([sys.executable, "-m", "beets", "-c", str(self.home / "config.yaml"), *args],
                             env=env, capture_output=True, text=True, timeout=300, cwd=self.home)
        assert run.returncode == 0, run.stdout + run.stderr
        return run

    def items(self) -> dict[str, dict]:
        """Every item by title, as beets' database holds it, and its file as it is now."""
        from beets.library import Library

        lib = Library(str(self.db), directory=str(self.home / "music"))
        try:
            out = {}
            for item in lib.items():
                path = Path(os.fsdecode(item.path))
                out[item.title] = {"path": path, "genres": list(item.genres),
                                   "model": item.get("tagger_model"),
                                   # a flexible field, a string to a beets without the plugin's types
                                   "confidence": None if item.get("tagger_confidence") is None
                                   else float(item["tagger_confidence"]),
                                   "bytes": hashlib.sha256(path.read_bytes()).hexdigest(),
                                   "mtime_ns": path.stat().st_mtime_ns}
            return out
        finally:
            lib._close()


#: title -> format of the files imported (the GTZAN jazz clip twice: ID3 and Vorbis comments)
FORMATS = {"Jazz MP3": "mp3", "Jazz FLAC": "flac", "Synth": "m4a", "Hum": "ogg"}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, audio_cache, gtzan):
    """A library imported as-is with ``auto: yes``: every item heard on import (one model load)."""
    home = tmp_path_factory.mktemp("beets")
    src = home / "incoming"
    make = audiofiles.AudioFactory(audio_cache, src)
    jazz = gtzan / "jazz" / "jazz.00002.mp3"
    for album in ("a", "b"):  # two folders: two albums to the importer
        (src / album).mkdir(parents=True)
    (src / "a" / "jazz.mp3").write_bytes(jazz.read_bytes())
    audiofiles.add_tags(src / "a" / "jazz.mp3", "mp3", {"title": ["Jazz MP3"], "artist": ["Quartet"]})
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(jazz), "-c:a", "flac", str(src / "b" / "jazz.flac")],
                   check=True)
    audiofiles.add_tags(src / "b" / "jazz.flac", "flac", {"title": ["Jazz FLAC"], "artist": ["Quartet"]})
    # synthesised notes (the default chain says Electronic) under a genre the user chose
    make("m4a", name="a/synth.m4a", seconds=40, tags={"title": ["Synth"], "artist": ["Band"], "genre": ["Chanson"]})
    # a hum no genre model knows: the chain is unsure, nothing is written
    make("ogg", name="b/hum.ogg", seconds=40, kind="hum", tags={"title": ["Hum"], "artist": ["Nobody"]})
    beets = Beets(home)
    beets.configure(auto=True)
    run = beets.run("import", "-A", str(src))
    return beets, run, beets.items()


@pytest.fixture(scope="module")
def pretended(imported):
    """``beet audiogenre --pretend --force`` on it (one model load): the library before and after."""
    beets, _, before = imported
    run = beets.run("audiogenre", "--pretend", "--force")
    return beets, run, before, beets.items()


@pytest.fixture(scope="module")
def forced(pretended):
    """``beet audiogenre --force title:Synth`` (one model load): the user's genre replaced."""
    beets, _, _, before = pretended
    run = beets.run("audiogenre", "--force", "title:Synth")
    return beets, run, before, beets.items()


def test_import_writes_the_chains_genres_into_beets_and_the_files(imported):
    _, run, items = imported
    assert set(items) == set(FORMATS)
    for title in ("Jazz MP3", "Jazz FLAC"):
        item, fmt = items[title], FORMATS[title]
        assert item["path"].is_relative_to(imported[0].home / "music")  # the copy in the library
        assert item["genres"] == ["Jazz"] and item["model"] == DEFAULT
        assert item["confidence"] >= 0.65
        # the file agrees, in tagger's own fields (so `tagger scan` sees the genre as tagger's)
        written = tags.read(item["path"], fmt)
        assert written == {"genre": ["Jazz"], "confidence": [f"{item['confidence']:.3f}"], "model": [DEFAULT]}
    assert "audiogenre: 4 items: 2 tagged, 1 kept the user's genre, 1 low confidence (no genre written)" in run.stdout


def test_import_keeps_the_users_genre_and_says_when_it_is_unsure(imported):
    _, run, items = imported
    synth = items["Synth"]
    assert synth["genres"] == ["Chanson"] and synth["model"] is None
    assert tags.read(synth["path"], "m4a") == {"genre": ["Chanson"], "confidence": [], "model": []}
    hum = items["Hum"]
    assert hum["genres"] == [] and hum["model"] is None and hum["confidence"] is None
    assert tags.read(hum["path"], "ogg") == {"genre": [], "confidence": [], "model": []}
    (line,) = [ln for ln in run.stdout.splitlines() if "Hum" in ln]
    assert line.split()[:2] == ["low", "confidence"] and "no genre, not sure enough:" in line


def test_pretend_says_what_it_would_write_and_writes_nothing(pretended):
    _, run, before, after = pretended
    assert after == before  # beets' database and every file's bytes and mtime
    out = run.stdout
    assert "would tag      Synth: Electronic" in out and "was Chanson" in out
    assert [ln.split()[0] for ln in out.splitlines()].count("unchanged") == 2
    assert "low confidence Hum: no genre, not sure enough" in out
    assert out.rstrip().endswith("pretend: nothing written")


def test_force_replaces_the_users_genre_in_beets_and_the_file(forced):
    _, run, before, after = forced
    synth = after["Synth"]
    assert synth["genres"] == ["Electronic"] and synth["model"] == DEFAULT
    assert tags.read(synth["path"], "m4a") == {"genre": ["Electronic"], "confidence": [f"{synth['confidence']:.3f}"],
                                              "model": [DEFAULT]}
    assert mutagen.File(synth["path"]).tags["\xa9nam"] == ["Synth"]  # beets' other fields stay
    assert {t: after[t] for t in after if t != "Synth"} == {t: before[t] for t in before if t != "Synth"}
    assert "audiogenre: 1 item: 1 tagged" in run.stdout


def test_without_auto_import_hears_nothing_and_the_command_keeps_the_users_genre(tmp_path, audio_factory):
    beets = Beets(tmp_path)
    beets.configure(auto=False)
    for fmt in ("mp3", "flac", "m4a", "ogg"):
        audio_factory(fmt, name=f"in/mine.{fmt}", seconds=8, tags={"title": [f"Mine {fmt}"], "genre": ["Ambient"]})
    run = beets.run("import", "-A", str(tmp_path / "in"))
    assert "audiogenre" not in run.stdout + run.stderr
    items = beets.items()
    assert {t: (i["genres"], i["model"]) for t, i in items.items()} == {
        f"Mine {fmt}": (["Ambient"], None) for fmt in ("mp3", "flac", "m4a", "ogg")}
    # a genre the user set is not even heard without --force
    run = beets.run("audiogenre", "title:Mine flac")
    assert "kept           Mine flac: kept the user's genre Ambient (--force replaces it)" in run.stdout
    assert beets.items() == items
    # beets writes every field it has when it writes a file: tagger's are absent, never written empty
    # (an empty TAGGER_MODEL beside a genre would make the user's genre look like tagger's)
    beets.run("modify", "-y", "comments=changed")
    for title, item in beets.items().items():
        fmt = title.split()[-1]
        assert tags.read(item["path"], fmt) == {"genre": ["Ambient"], "confidence": [], "model": []}, title
        assert not any("TAGGER" in str(k).upper() for k in mutagen.File(item["path"]).tags.keys()), title
    # a file gone from under beets is said to have failed, and the others go on
    items = beets.items()
    items["Mine ogg"]["path"].unlink()
    run = beets.run("audiogenre", "--force", "title:Mine ogg")
    assert "failed         Mine ogg: file no longer exists" in run.stdout
    assert "audiogenre: 1 item: 1 failed" in run.stdout
