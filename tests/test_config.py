from pathlib import Path

import pytest

from tagger import config
from tagger.errors import ConfigError
from tagger.models.progressive import Hearing


def test_precedence_defaults_file_env_flags(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[tagger]\nmin_confidence = 0.5\nworkers = 3\nmodel = "from-file"\n')
    env = {"TAGGER_WORKERS": "4", "TAGGER_DATA_DIR": str(tmp_path / "d")}
    s = config.load({"model": "from-flag", "overwrite": None}, environ=env, config_file=cfg)
    assert s.min_confidence == 0.5  # file
    assert s.workers == 4  # environment beats file
    assert s.model == "from-flag"  # flag beats both
    assert s.overwrite is False  # a None flag is "not given"
    assert s.database_url == f"sqlite:///{tmp_path / 'd' / 'tagger.sqlite3'}"
    assert s.is_embedded


def test_each_settings_source_is_recorded_where_the_settings_are_built(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[tagger]\nworkers = 3\nmodel = "from-file"\n[genres]\nrock = "Rawk"\n')
    loaded = config.load_with_sources({"model": "from-flag", "overwrite": None}, environ={"TAGGER_WORKERS": "4"},
                                      config_file=cfg)
    assert loaded.settings == config.load({"model": "from-flag"}, environ={"TAGGER_WORKERS": "4"}, config_file=cfg)
    assert loaded.sources["workers"] == config.Source("env", "TAGGER_WORKERS")
    assert loaded.sources["model"] == config.Source("flag", "model")
    assert loaded.sources["genre_names"] == config.Source("file", str(cfg))
    assert loaded.sources["overwrite"] == loaded.sources["windows"] == config.Source("default")
    assert loaded.genre_source("rock") == config.Source("file", str(cfg))
    assert loaded.genre_source("jazz") == config.Source("default")
    assert (loaded.file, loaded.file_named_by, loaded.file_read) == (cfg, "--config", True)


def test_redis_url_means_distributed(tmp_path):
    s = config.load(environ={"TAGGER_BROKER_URL": "redis://h:6379/0"}, config_file=tmp_path / "x.toml")
    assert not s.is_embedded and s.queue_url == "redis://h:6379/0"


@pytest.mark.parametrize("text, message", [
    ("[tagger]\ncolour = 'blue'\n", "unknown setting 'colour'"),
    ("[tagger]\nworkers = 'many'\n", "setting workers"),
    ("not toml = = =", "cannot read config file"),
    ("[scan]\nworkers = 2\n", "unknown table [scan]"),  # was read as no settings at all
    ("[tagger]\nworkers = -3\n", "workers must be at least 0"),
    ("[tagger]\nmax_retries = -1\n", "max_retries must be at least 0"),
])
def test_bad_config_file_gives_one_line(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(environ={}, config_file=cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_min_confidence_range(tmp_path):
    with pytest.raises(ConfigError):
        config.load({"min_confidence": 1.5}, environ={}, config_file=tmp_path / "none.toml")


def test_path_map_translates_scanner_paths(tmp_path):
    s = config.load(environ={"TAGGER_PATH_MAP": "/srv/music=/mnt/music"}, config_file=tmp_path / "n.toml")
    assert s.map_path("/srv/music/a/b.mp3") == "/mnt/music/a/b.mp3"
    assert s.map_path("/srv/musical/b.mp3") == "/srv/musical/b.mp3"
    assert Path(s.map_path("/other/x.mp3")) == Path("/other/x.mp3")


def test_windows_setting(tmp_path):
    none = tmp_path / "none.toml"
    assert config.load(config_file=none, environ={}).windows == 10
    assert config.load(config_file=none, environ={"TAGGER_WINDOWS": "3"}).windows == 3
    for bad in ("0", "65"):
        with pytest.raises(ConfigError, match="windows must be between 1 and 64"):
            config.load(config_file=none, environ={"TAGGER_WINDOWS": bad})


def test_precision_setting(tmp_path):
    none = tmp_path / "none.toml"
    assert config.load(config_file=none, environ={}).precision == "auto"
    settings = config.load(config_file=none, environ={"TAGGER_PRECISION": "float32"})
    assert settings.precision == "float32" and settings.to_env()["TAGGER_PRECISION"] == "float32"
    with pytest.raises(ConfigError, match="precision must be auto, float32 or bfloat16"):
        config.load(config_file=none, environ={"TAGGER_PRECISION": "fp16"})


def test_progressive_settings(tmp_path):
    none = tmp_path / "none.toml"
    s = config.load(config_file=none, environ={})
    assert (s.first_windows, s.window_step, s.early_stop, s.give_up) == (3, 2, 0.95, 0.1)
    s = config.load(config_file=none, environ={"TAGGER_FIRST_WINDOWS": "0", "TAGGER_EARLY_STOP": "0.9",
                                               "TAGGER_WINDOW_STEP": "1", "TAGGER_GIVE_UP": "0"})
    assert (s.first_windows, s.window_step, s.early_stop, s.give_up) == (0, 1, 0.9, 0.0)
    assert s.hearing == Hearing(10, 0, 1, 0.9, 0.0)
    env = s.to_env()
    assert (env["TAGGER_FIRST_WINDOWS"], env["TAGGER_WINDOW_STEP"], env["TAGGER_EARLY_STOP"],
            env["TAGGER_GIVE_UP"]) == ("0", "1", "0.9", "0.0")
    # a child process given that environment has the same settings
    assert config.load(config_file=none, environ=env).hearing == s.hearing
    with pytest.raises(ConfigError, match="early_stop must be between 0 and 1"):
        config.load(config_file=none, environ={"TAGGER_EARLY_STOP": "1.5"})
    with pytest.raises(ConfigError, match="give_up must be at least 0 and below 1"):
        config.load(config_file=none, environ={"TAGGER_GIVE_UP": "1"})
    with pytest.raises(ConfigError, match="first_windows must be between 0 and 64"):
        config.load(config_file=none, environ={"TAGGER_FIRST_WINDOWS": "-1"})
    with pytest.raises(ConfigError, match="window_step must be between 0 and 64"):
        config.load(config_file=none, environ={"TAGGER_WINDOW_STEP": "65"})


def test_settings_at_the_top_level_or_under_tagger_are_both_read(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("workers = 2\n[tagger]\nmin_confidence = 0.4\n")
    s = config.load(environ={}, config_file=cfg)
    assert (s.workers, s.min_confidence) == (2, 0.4)


def test_a_config_file_the_user_named_must_exist(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(environ={}, config_file=missing, required=True)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(environ={"TAGGER_CONFIG": str(missing)})
    assert config.load(environ={}, config_file=missing).workers == 0  # the default place: optional
    with pytest.raises(ConfigError, match="workers must be at least 0"):
        config.load(environ={"TAGGER_WORKERS": "-3"}, config_file=missing)


def test_the_command_line_says_so_in_one_line(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TAGGER_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "tagger", "--config", str(tmp_path / "nope.toml"), "report"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"Error: config file {tmp_path / 'nope.toml'} does not exist"]
    out = subprocess.run([sys.executable, "-m", "tagger", "report"], env={**env, "TAGGER_WORKERS": "-3"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "workers must be at least 0" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- tagger config: what is in force, and whence

def _tagger(tmp_path, *args, **env):
    """``tagger ARGS`` in a real process, with only these TAGGER_* variables (and a HOME of its own)."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    base.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config"),
                 "XDG_DATA_HOME": str(tmp_path / ".local/share"), **env})
    return subprocess.run([sys.executable, "-m", "tagger", *args], env=base, capture_output=True, text=True,
                          timeout=120)


SECRET_ENV = {"TAGGER_MIN_CONFIDENCE": "0.4", "TAGGER_DB_URL": "postgresql+psycopg://tagger:s3cret@db.example/tagger",
              "TAGGER_API_TOKEN": "tok-123456"}


def test_tagger_config_says_where_each_setting_came_from(tmp_path):
    import dataclasses
    import json

    cfg = tmp_path / "tagger.toml"
    cfg.write_text('[tagger]\nworkers = 3\nmin_confidence = 0.5\ngenre_separator = " / "\n[genres]\nhiphop = "Rap"\n')
    out = _tagger(tmp_path, "--broker", "redis://:hunter2@queue:6379/0", "config", "--json",
                  TAGGER_CONFIG=str(cfg), **SECRET_ENV)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["config_file"] == {"path": str(cfg), "named_by": "TAGGER_CONFIG", "read": True}
    got = {name: (e["value"], e["source"], e["from"]) for name, e in doc["settings"].items()}
    assert got["workers"] == (3, "file", str(cfg))
    assert got["genre_separator"] == (" / ", "file", str(cfg))
    assert got["min_confidence"] == (0.4, "env", "TAGGER_MIN_CONFIDENCE")  # the environment beats the file
    assert got["db_url"] == ("postgresql+psycopg://tagger:***@db.example/tagger", "env", "TAGGER_DB_URL")
    assert got["broker_url"] == ("redis://:***@queue:6379/0", "flag", "--broker")
    assert got["api_token"] == ("***", "env", "TAGGER_API_TOKEN")
    assert got["windows"] == (10, "default", None)
    assert got["data_dir"] == (str(tmp_path / ".local/share/tagger"), "default", None)
    assert doc["genres"]["hiphop"] == {"name": "Rap", "source": "file", "from": str(cfg)}
    assert doc["genres"]["rnb"] == {"name": "R&B", "source": "default", "from": None}
    assert set(doc["settings"]) | {"genre_names"} == {f.name for f in dataclasses.fields(config.Settings)}
    for secret in ("s3cret", "hunter2", "tok-123456"):
        assert secret not in out.stdout

    text = _tagger(tmp_path, "--broker", "redis://:hunter2@queue:6379/0", "config", TAGGER_CONFIG=str(cfg),
                   **SECRET_ENV)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"# config file: {cfg} (named by TAGGER_CONFIG)"

    def line(start):
        (found,) = [ln for ln in lines if ln.startswith(start)]
        return " ".join(found.split())

    assert line("workers =") == "workers = 3 # config file"
    assert line("min_confidence =") == "min_confidence = 0.4 # env TAGGER_MIN_CONFIDENCE"
    assert line("broker_url =") == 'broker_url = "redis://:***@queue:6379/0" # flag --broker'
    assert line("window_step =") == "window_step = 2 # default"
    assert line("hiphop =") == 'hiphop = "Rap" # config file'
    assert line("jazz =") == 'jazz = "Jazz" # default'
    assert "[genres]" in text.stdout.split("\n[tagger]\n")[1]
    for secret in ("s3cret", "hunter2", "tok-123456"):
        assert secret not in text.stdout

    # named on the command line instead; TAGGER_GENRE_NAMES replaces the file's [genres] table
    flagged = _tagger(tmp_path, "--config", str(cfg), "config", "--json", TAGGER_GENRE_NAMES="rnb=Soul")
    doc = json.loads(flagged.stdout)
    assert doc["config_file"]["named_by"] == "--config"
    assert doc["genres"]["rnb"] == {"name": "Soul", "source": "env", "from": "TAGGER_GENRE_NAMES"}
    assert doc["genres"]["hiphop"] == {"name": "Hip-Hop", "source": "default", "from": None}


def test_tagger_config_with_no_config_file_and_its_help(tmp_path):
    import json

    out = _tagger(tmp_path, "config", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["config_file"] == {"path": str(tmp_path / ".config/tagger/config.toml"), "named_by": None,
                                  "read": False}
    assert all(e["source"] == "default" for e in doc["settings"].values())
    assert doc["settings"]["db_url"]["value"] == f"sqlite:///{tmp_path / '.local/share/tagger/tagger.sqlite3'}"
    text = _tagger(tmp_path, "config")
    assert text.stdout.splitlines()[0].endswith("(the default place; not there, none read)")
    helped = _tagger(tmp_path, "config", "--help")
    assert helped.returncode == 0 and "where each came from" in helped.stdout and "--json" in helped.stdout


@pytest.mark.parametrize("text, message", [
    ("not toml = = =", "cannot read config file"),
    ("[tagger]\nworkers = 'many'\n", "setting workers: cannot use 'many'"),
    ("[genres]\nshoegaze = 'Shoegaze'\n", "'shoegaze' is not one of tagger's genres"),
])
def test_tagger_config_on_a_broken_config_file_is_one_line_and_exit_1(tmp_path, text, message):
    cfg = tmp_path / "broken.toml"
    cfg.write_text(text)
    out = _tagger(tmp_path, "config", TAGGER_CONFIG=str(cfg))
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("Error: ") and message in out.stderr
    missing = _tagger(tmp_path, "--config", str(tmp_path / "nope.toml"), "config")
    assert missing.returncode == 1 and missing.stderr.strip() == f"Error: config file {tmp_path / 'nope.toml'} does not exist"


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://user:pa@ss@db:5432/tagger", "postgresql+psycopg://user:***@db:5432/tagger"),
    ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://default:secret@host/1", "rediss://default:***@host/1"),
    ("postgresql://db/tagger?user=u&password=secret", "postgresql://db/tagger?user=u&password=***"),
    ("postgresql+psycopg://user@db/tagger", "postgresql+psycopg://user@db/tagger"),
    ("sqlite:////home/u/.local/share/tagger/tagger.sqlite3", "sqlite:////home/u/.local/share/tagger/tagger.sqlite3"),
])
def test_passwords_in_urls_are_masked(url, shown):
    assert config.mask_url(url) == shown


def test_runtime_is_auto_keras_litert_or_onnx(tmp_path):
    assert config.load({}, environ={}, config_file=tmp_path / "none.toml").runtime == "auto"
    assert config.load({}, environ={"TAGGER_RUNTIME": "litert"}, config_file=tmp_path / "none.toml").runtime == "litert"
    assert config.load({}, environ={"TAGGER_RUNTIME": "onnx"}, config_file=tmp_path / "none.toml").runtime == "onnx"
    with pytest.raises(config.ConfigError, match="runtime must be auto, keras, litert or onnx"):
        config.load({}, environ={"TAGGER_RUNTIME": "tflite"}, config_file=tmp_path / "none.toml")
