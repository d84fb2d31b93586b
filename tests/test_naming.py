"""Genre names as a library has them: display names, the user's own names and list, the separator."""
from __future__ import annotations

import json
import subprocess

import mutagen
import pytest
from services import run_cli

from tagger import config, genres, tags
from tagger.errors import ConfigError
from tagger.naming import DISPLAY, Naming, check, genre_id


def test_every_genre_of_the_taxonomy_has_a_display_name():
    assert set(DISPLAY) == set(genres.GENRES)


def test_names_written_and_read_back_as_ids():
    assert Naming().written(["hiphop", "rnb"]) == ["Hip-Hop", "R&B"]
    assert Naming(separator="; ").written(["rock", "metal"]) == ["Rock; Metal"]
    # where players show one value of several (ID3, MP4): joined, with "; " unless the user chose a separator
    assert Naming().written(["rock", "metal"], lists=False) == ["Rock; Metal"]
    assert Naming(separator=" / ").written(["rock", "metal"], lists=False) == ["Rock / Metal"]
    assert Naming().written(["rock"], lists=False) == ["Rock"]
    assert Naming().top("Rock; Metal") == "Rock" and Naming(separator=" / ").top("Rock / Metal") == "Rock"
    assert Naming(names=(("rock", "Rock; Roll"),)).top("Rock; Roll") == "Rock; Roll"  # a name of the user's
    assert Naming(names=(("hiphop", "Rap"),)).written(["hiphop"]) == ["Rap"]
    only = Naming(only=("rock", "jazz"))
    assert only.written(["rock", "metal", "jazz"]) == ["Rock", "Jazz"]
    assert only.written(["metal", "rock"]) == []  # the top genre is off the list: nothing
    for name, gid in [("Hip-Hop", "hiphop"), ("hip hop", "hiphop"), ("R&B", "rnb"), ("rnb", "rnb"),
                      ("  Electronic ", "electronic"), ("Shoegaze", None)]:
        assert genre_id(name) == gid, name
    assert genre_id("Rap & Co", [("hiphop", "Rap & Co")]) == "hiphop"


def test_the_config_file_renames_and_limits(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tagger]\ngenres_only = ["Rock", "hip hop", "jazz"]\ngenre_separator = " / "\n'
                   '[genres]\nhiphop = "Rap"\n')
    s = config.load(environ={}, config_file=cfg)
    assert s.naming == Naming((("hiphop", "Rap"),), ("rock", "hiphop", "jazz"), " / ")
    env = config.load(environ={"TAGGER_GENRES_ONLY": "Rock,Rap", "TAGGER_GENRE_NAMES": "hiphop=Rap;rnb=Soul"},
                      config_file=tmp_path / "none.toml")
    assert env.naming.only == ("rock", "hiphop") and env.naming.shown("rnb") == "Soul"


@pytest.mark.parametrize("text, message", [
    ('[genres]\nshoegaze = "Shoegaze"\n', "'shoegaze' is not one of tagger's genres"),
    ('[tagger]\ngenres_only = ["Polka"]\n', "genres_only: 'Polka' is not one of tagger's genres"),
    ('[genres]\nrock = ""\n', "the name for 'rock' is empty"),
])
def test_naming_mistakes_are_one_line(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(environ={}, config_file=cfg)
    with pytest.raises(ValueError):
        check([("nope", "x")], [])


def _ffprobe_genre(path) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags=genre", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    tags_ = json.loads(out.stdout).get("format", {}).get("tags", {})
    return next((v for k, v in tags_.items() if k.lower() == "genre"), "")


def test_a_scan_writes_the_names_players_show_and_the_users_own(settings, audio_factory, tmp_path):
    files = [audio_factory(fmt, name=f"lib/a.{fmt}", seconds=12) for fmt in ("mp3", "flac", "m4a")]
    out = run_cli(settings, "scan", "--json", str(files[0].parent))
    assert out.returncode == 0, out.stderr
    for path in files:
        written = tags.read(path, path.suffix[1:])["genre"]
        assert len(written) == 1 and written[0] in DISPLAY.values(), written  # "Jazz", not "jazz"
        assert _ffprobe_genre(path) == written[0]  # what a player built on FFmpeg shows
    # renamed, through the config file; --force analyses the same files again
    cfg = tmp_path / "c.toml"
    cfg.write_text("[genres]\n" + "".join(f'{g} = "My {g}"\n' for g in DISPLAY))
    out = run_cli(settings, "--config", str(cfg), "scan", "--force", "--json", str(files[0].parent))
    assert out.returncode == 0, out.stderr
    for path in files:
        written = tags.read(path, path.suffix[1:])["genre"]
        assert written[0].startswith("My ") and genre_id(written[0], [(g, f"My {g}") for g in DISPLAY]) in DISPLAY
        assert mutagen.File(path, easy=True)["genre"] == written  # a tag of tagger's, recognised as such
    # a whitelist that holds none of the test model's genres: nothing written, all low confidence
    out = run_cli(settings, "scan", "--force", "--json", str(files[0].parent), TAGGER_GENRES_ONLY="electronic")
    summary = json.loads(out.stdout)
    assert summary["tagged"] == 0 and summary["low_confidence"] == len(files), summary


def test_broad_genre_reads_genres_as_people_tag_them():
    from tagger.naming import broad_genre

    assert broad_genre("Death Metal") == broad_genre("Female Fronted Metal") == "metal"
    assert broad_genre("Romantic Classical") == broad_genre("Orchestral") == "classical"
    assert broad_genre("Deep House") == broad_genre("dnb") == broad_genre("Chiptune") == "electronic"
    assert broad_genre("Punk Rock") == "punk" and broad_genre("Blues Rock") == "blues"
    assert broad_genre("Hip Hop") == broad_genre("Rap") == "hiphop" and broad_genre("R&B") == "rnb"
    assert broad_genre("Progressive Rock") == "rock" and broad_genre("pop") == "pop"
    for none in ("Soundtrack", "Game music", "Other", "Psychedelic", "Trap", "Popcorn", "", "  "):
        assert broad_genre(none) is None, none
