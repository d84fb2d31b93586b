"""One Settings object, built once: defaults ← config file ← TAGGER_* environment ← flags.

Nothing else in tagger reads ``os.environ`` for its own settings; the object
is passed down.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit

from tagger.errors import ConfigError
from tagger.naming import DISPLAY, Naming, check as check_naming
from tagger.options import MIN_CONFIDENCE, Hearing


def _data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tagger", appauthor=False))


def _config_file() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("tagger", appauthor=False)) / "config.toml"


#: the most windows a track may be cut into (each costs a model pass)
MAX_WINDOWS = 64
#: the smallest value each numeric setting takes (workers 0: one per core)
_AT_LEAST = {"workers": 0, "max_retries": 0, "job_time_limit": 1, "max_upload_mb": 1, "max_duration_s": 1}
#: values of the precision setting (see tagger.models.runtime.compute_dtype)
PRECISIONS = ("auto", "float32", "bfloat16")
#: values of the runtime setting: what runs a network that has a LiteRT export besides Keras
RUNTIMES = ("auto", "keras", "litert", "onnx")


@dataclass(frozen=True)
class Settings:
    #: where the SQLite database and the local queue live by default
    data_dir: Path = field(default_factory=_data_dir)
    #: SQLAlchemy URL of the results database; empty: SQLite in data_dir
    db_url: str = ""
    #: ``redis://…`` sends jobs through Redis; empty: the local queue in data_dir
    broker_url: str = ""
    #: local worker processes for an embedded scan; 0: one per core
    workers: int = 0
    #: below this confidence no tag is written
    min_confidence: float = MIN_CONFIDENCE
    #: model name; empty: the default chain (primary, then fallback)
    model: str = ""
    #: 3 s windows analysed per track, spread over it (fewer: faster, a little less accurate)
    windows: int = Hearing.windows
    #: windows heard first; more only while the model's confidence is below early_stop (0: all at once)
    first_windows: int = Hearing.first
    #: windows heard at a time after the first ones (0: all the others at once)
    window_step: int = Hearing.step
    #: top probability at which the windows heard so far decide a track
    early_stop: float = Hearing.stop
    #: below this best chance of being right the windows heard so far decide a track, untagged (0: never)
    give_up: float = Hearing.give_up
    #: musicnn's arithmetic: auto (bfloat16 where the CPU has it in hardware), float32, bfloat16
    precision: str = "auto"
    #: keras (TensorFlow: faster per window on a CPU with AVX-512), litert or onnx (the default
    #: model's LiteRT or ONNX Runtime export: a worker starts without TensorFlow, in less time and
    #: memory) or auto: on a CPU with AVX-512, onnx for the workers of a scan small enough that
    #: start-up outweighs the slower windows, else keras; on one without, onnx everywhere
    #: (processes.runtime_for)
    runtime: str = "auto"
    #: on: the default model hears each track with its distilled student first, and musicnn (the
    #: teacher) hears again only the tracks the student does not find hopeless (tagger.models.student):
    #: faster on unfamiliar music, but fewer tags written there; off (the default): musicnn hears every track
    student: bool = False
    #: extra directories searched for model cards before the shipped ones
    model_dirs: tuple[str, ...] = ()
    #: replace a genre the user set themselves
    overwrite: bool = False
    #: seconds one job may run before it is stopped and retried
    job_time_limit: int = 600
    #: retries for transient failures
    max_retries: int = 5
    #: scanner root → worker mount, for workers that see the files elsewhere
    path_map: tuple[tuple[str, str], ...] = ()
    #: ``tagger serve``: bearer token; required when bound to a non-loopback address
    api_token: str = ""
    #: ``tagger serve``: folders whose files ``?path=`` and ``POST /v1/scans`` may name; none: refused
    library_roots: tuple[str, ...] = ()
    #: ``tagger serve``: Host names answered besides loopback ones and the bind host; others: 421
    allowed_hosts: tuple[str, ...] = ()
    #: ``tagger serve``: largest accepted upload, MiB
    max_upload_mb: int = 200
    #: ``tagger serve``: longest audio accepted for a prediction, seconds
    max_duration_s: float = 3600.0
    #: taxonomy id -> the name written instead of its display name (``[genres]`` in the config file)
    genre_names: tuple[tuple[str, str], ...] = ()
    #: only these genres are written (ids or names); empty: all
    genres_only: tuple[str, ...] = ()
    #: joins several genres into one value in every format (e.g. " / "); empty: several values where
    #: the format's players read them all (Vorbis comments), else joined with naming.JOIN ("; ")
    genre_separator: str = ""

    @property
    def hearing(self) -> Hearing:
        """How much of each track the model hears (``tagger.options.Hearing``)."""
        return Hearing(self.windows, self.first_windows, self.window_step, self.early_stop, self.give_up)

    @property
    def naming(self) -> Naming:
        """How genres are spelled in the files (``tagger.naming``)."""
        return Naming(self.genre_names, self.genres_only, self.genre_separator)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'tagger.sqlite3'}"

    @property
    def queue_url(self) -> str:
        return self.broker_url or f"sqlite:///{self.data_dir / 'queue.sqlite3'}"

    @property
    def is_embedded(self) -> bool:
        """True when jobs go through the local queue (no Redis configured)."""
        return not self.queue_url.startswith(("redis://", "rediss://", "unix://"))

    @property
    def worker_count(self) -> int:
        from tagger import cpus

        return self.workers if self.workers > 0 else cpus.usable()

    def map_path(self, path: str) -> str:
        """Translate a path as the scanner saw it into this worker's view."""
        for src, dst in self.path_map:
            if path == src or path.startswith(src.rstrip("/") + "/"):
                return dst.rstrip("/") + path[len(src.rstrip("/")) :]
        return path

    def to_env(self) -> dict[str, str]:
        """The environment that gives a child process these same settings."""
        return {
            "TAGGER_DATA_DIR": str(self.data_dir),
            "TAGGER_DB_URL": self.database_url,
            "TAGGER_BROKER_URL": self.queue_url,
            "TAGGER_MODEL_DIRS": os.pathsep.join(self.model_dirs),
            "TAGGER_JOB_TIME_LIMIT": str(self.job_time_limit),
            "TAGGER_MAX_RETRIES": str(self.max_retries),
            "TAGGER_PATH_MAP": ";".join(f"{a}={b}" for a, b in self.path_map),
            "TAGGER_PRECISION": self.precision,
            "TAGGER_RUNTIME": self.runtime,
            "TAGGER_STUDENT": "on" if self.student else "off",
            "TAGGER_WINDOWS": str(self.windows),
            "TAGGER_FIRST_WINDOWS": str(self.first_windows),
            "TAGGER_WINDOW_STEP": str(self.window_step),
            "TAGGER_EARLY_STOP": str(self.early_stop),
            "TAGGER_GIVE_UP": str(self.give_up),
        }


def _coerce(name: str, value: Any) -> Any:
    kinds = {f.name: f.type for f in fields(Settings)}
    kind = kinds[name]
    try:
        if kind == "Path":
            return Path(str(value)).expanduser()
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in {"1", "true", "yes", "on"}
        if name in ("model_dirs", "library_roots"):
            if isinstance(value, str):
                return tuple(p for p in value.split(os.pathsep) if p)
            return tuple(str(p) for p in value)
        if name == "allowed_hosts":  # host names may hold ":" (a port), so commas, not os.pathsep
            items = value.split(",") if isinstance(value, str) else [str(h) for h in value]
            return tuple(h.strip() for h in items if h.strip())
        if name == "genres_only":
            items = value.split(",") if isinstance(value, str) else [str(g) for g in value]
            return tuple(g.strip() for g in items if g.strip())
        if name in ("path_map", "genre_names"):
            if isinstance(value, str):
                pairs = [p.split("=", 1) for p in value.split(";") if p]
            elif isinstance(value, Mapping):
                pairs = list(value.items())
            else:
                pairs = list(value)
            return tuple((str(a), str(b)) for a, b in pairs)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: cannot use {value!r}") from None


#: the tables a config file may hold; settings may also stand at the top level
TABLES = ("tagger", "genres")


def _from_file(doc: dict[str, Any], path: Path, names: set[str]) -> dict[str, Any]:
    """The settings in a parsed config file: under ``[tagger]``, or at the top level."""
    values = {}
    for key, value in doc.items():
        if isinstance(value, dict) and key not in TABLES:
            raise ConfigError(f"unknown table [{key}] in {path} (settings go under [tagger], genre names "
                              "under [genres])")
    if "genres" in doc:  # [genres] hiphop = "Rap": taxonomy id = the name written
        values["genre_names"] = _coerce("genre_names", {str(k): str(v) for k, v in doc["genres"].items()})
    section = dict(doc.get("tagger", {}))
    section.update({k: v for k, v in doc.items() if k not in TABLES})
    for key, value in section.items():
        if key not in names:
            raise ConfigError(f"unknown setting {key!r} in {path}")
        values[key] = _coerce(key, value)
    return values


@dataclass(frozen=True)
class Source:
    """Where a setting's value came from: ``kind`` is one of :data:`SOURCES`; ``where`` names it
    (the config file's path, the environment variable, the setting a flag set; empty for a default)."""

    kind: str
    where: str = ""


#: the kinds of source, lowest first: each overrides the ones before it
SOURCES = ("default", "file", "env", "flag")


@dataclass(frozen=True)
class Loaded:
    """The settings and where each came from, as :func:`load_with_sources` built them."""

    settings: Settings
    #: setting name -> where its value came from (every field of Settings)
    sources: dict[str, Source]
    #: the config file read, or looked for when it is not there
    file: Path
    #: what named the file: "--config", "TAGGER_CONFIG", or "" (the default place)
    file_named_by: str
    #: whether the file was there and read
    file_read: bool

    def genre_source(self, gid: str) -> Source:
        """Where the name written for the taxonomy id ``gid`` came from: the layer that set the
        ``[genres]`` table (file or TAGGER_GENRE_NAMES, which replaces the file's table as a
        whole) when it names ``gid``, else the default display name."""
        if gid in dict(self.settings.genre_names):
            return self.sources["genre_names"]
        return Source("default")


def load(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    required: bool = False,
) -> Settings:
    """Build the settings: defaults ← config file ← ``TAGGER_*`` environment ← ``overrides``.

    ``overrides`` holds command-line flags; ``None`` values are ignored. ``required``: the
    config file was named on the command line, and must exist (as one named by
    ``TAGGER_CONFIG`` must).
    """
    return load_with_sources(overrides, environ, config_file, required).settings


def load_with_sources(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    required: bool = False,
) -> Loaded:
    """:func:`load`, also saying where each setting came from (``tagger config`` prints it)."""
    environ = os.environ if environ is None else environ
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}

    named = environ.get("TAGGER_CONFIG") if config_file is None else config_file
    named_by = "" if not named else "TAGGER_CONFIG" if config_file is None else "--config"
    path = Path(os.path.abspath(Path(named or _config_file()).expanduser()))
    if (required or (named and config_file is None)) and not path.exists():
        # a file the user named (--config, TAGGER_CONFIG) and that is not there is a mistake
        raise ConfigError(f"config file {path} does not exist")
    read = path.exists() and not path.is_dir()
    if read:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        from_file = _from_file(doc, path, names)
        values.update(from_file)
        sources.update({name: Source("file", str(path)) for name in from_file})

    for name in names:
        var = f"TAGGER_{name.upper()}"
        env = environ.get(var)
        if env not in (None, ""):
            values[name] = _coerce(name, env)
            sources[name] = Source("env", var)

    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
            sources[name] = Source("flag", name)

    if "min_confidence" in values and not 0.0 <= values["min_confidence"] <= 1.0:
        raise ConfigError("min_confidence must be between 0 and 1")
    if "runtime" in values and values["runtime"] not in RUNTIMES:
        raise ConfigError(f"runtime must be {', '.join(RUNTIMES[:-1])} or {RUNTIMES[-1]}")
    if "precision" in values and values["precision"] not in PRECISIONS:
        raise ConfigError(f"precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")
    if "first_windows" in values and not 0 <= values["first_windows"] <= MAX_WINDOWS:
        raise ConfigError(f"first_windows must be between 0 and {MAX_WINDOWS}")
    if "window_step" in values and not 0 <= values["window_step"] <= MAX_WINDOWS:
        raise ConfigError(f"window_step must be between 0 and {MAX_WINDOWS}")
    if "early_stop" in values and not 0.0 <= values["early_stop"] <= 1.0:
        raise ConfigError("early_stop must be between 0 and 1")
    if "give_up" in values and not 0.0 <= values["give_up"] < 1.0:
        raise ConfigError("give_up must be at least 0 and below 1")
    if "windows" in values and not 1 <= values["windows"] <= MAX_WINDOWS:
        raise ConfigError(f"windows must be between 1 and {MAX_WINDOWS}")
    if "genre_names" in values or "genres_only" in values:
        try:
            values["genre_names"], values["genres_only"] = check_naming(values.get("genre_names", ()),
                                                                        values.get("genres_only", ()))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for name, low in _AT_LEAST.items():
        if name in values and values[name] < low:
            raise ConfigError(f"{name} must be at least {low} (got {values[name]})")
    settings = replace(Settings(), **values)
    every = {name: sources.get(name, Source("default")) for name in (f.name for f in fields(Settings))}
    return Loaded(settings, every, path, named_by, read)


# ---------------------------------------------------------------- what is in force (tagger config)

#: settings whose whole value is a secret: shown as "***" when set
SECRETS = ("api_token",)


def mask_url(url: str) -> str:
    """``url`` with its password masked (``user:***@host``, and a ``password=`` query value), to be
    printed or logged; anything that is not such a URL is returned as it is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    masked = url
    if password is not None:
        userinfo, host = parts.netloc.rsplit("@", 1)
        masked = masked.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:***@{host}", 1)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() == "password" and value:
            masked = masked.replace(f"{key}={value}", f"{key}=***")
    return masked


def _plain(name: str, settings: Settings) -> Any:
    """A setting's value in force as JSON-able data, secrets masked; the URLs as used (the
    database and queue in data_dir when none is set)."""
    if name == "db_url":
        return mask_url(settings.database_url)
    if name == "broker_url":
        return mask_url(settings.queue_url)
    value = getattr(settings, name)
    if name in SECRETS:
        return "***" if value else ""
    if name == "path_map":
        return {a: b for a, b in value}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def describe(loaded: Loaded) -> dict[str, Any]:
    """The settings in force and where each came from, as plain data with secrets masked (what
    ``tagger config --json`` prints): the config file, every setting, and the ``[genres]`` table
    as the names written for every genre of the taxonomy."""
    def source(src: Source) -> dict[str, Any]:
        return {"source": src.kind, "from": src.where or None}

    settings = {f.name: {"value": _plain(f.name, loaded.settings), **source(loaded.sources[f.name])}
                for f in fields(Settings) if f.name != "genre_names"}
    genres = {gid: {"name": loaded.settings.naming.shown(gid), **source(loaded.genre_source(gid))}
              for gid in DISPLAY}
    return {"config_file": {"path": str(loaded.file), "named_by": loaded.file_named_by or None,
                            "read": loaded.file_read},
            "settings": settings, "genres": genres}
