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
    assert (s.first_windows, s.window_step, s.early_stop) == (3, 2, 0.9)
    s = config.load(config_file=none, environ={"TAGGER_FIRST_WINDOWS": "0", "TAGGER_EARLY_STOP": "0.9",
                                               "TAGGER_WINDOW_STEP": "1"})
    assert (s.first_windows, s.window_step, s.early_stop) == (0, 1, 0.9)
    assert s.hearing == Hearing(10, 0, 1, 0.9)
    env = s.to_env()
    assert (env["TAGGER_FIRST_WINDOWS"], env["TAGGER_WINDOW_STEP"], env["TAGGER_EARLY_STOP"]) == ("0", "1", "0.9")
    # a child process given that environment has the same settings
    assert config.load(config_file=none, environ=env).hearing == s.hearing
    with pytest.raises(ConfigError, match="early_stop must be between 0 and 1"):
        config.load(config_file=none, environ={"TAGGER_EARLY_STOP": "1.5"})
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
