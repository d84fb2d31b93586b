"""Broker set-up and enqueueing: the local SQLite queue or Redis, same actors.

``configure(settings)`` builds the broker the settings name, makes it
Dramatiq's global broker and declares the actors (``workers.actors``), whose
decorators bind to whatever broker is global when they are imported.
"""
from __future__ import annotations

from typing import Iterable, Optional

import dramatiq
from dramatiq.middleware import CurrentMessage

from tagger.config import Settings

QUEUE_NAME = "tagger"

_settings: Optional[Settings] = None
_broker: Optional[dramatiq.Broker] = None


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.queue_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        from dramatiq.brokers.redis import RedisBroker

        url, options = redis_options(url)
        broker = RedisBroker(url=url, **options)
    elif url.startswith("sqlite:///"):
        from tagger.localqueue import SQLiteBroker

        broker = SQLiteBroker(url[len("sqlite:///"):])
    else:
        from tagger.errors import ConfigError

        raise ConfigError(f"unsupported broker URL {url!r} (use redis://… or sqlite:///…)")
    broker.add_middleware(CurrentMessage())
    return broker


#: RedisBroker options that may be given as query parameters of the broker URL
#: (``redis://host:6379/0?heartbeat_timeout=15000``), with tagger's defaults.
#: Dramatiq's own (60 s, maintenance on 0.1 % of commands) leave a job held by
#: a SIGKILLed worker stranded for many minutes at tagger's low command rate:
#: an idle worker sends about two commands a second. A live worker refreshes
#: its heartbeat on every command, and its delay-queue consumer polls at least
#: every worker_timeout (0.5-1 s) even while its job threads are busy, so 15 s
#: leaves a wide margin. Maintenance is a few cheap sorted-set lookups.
REDIS_OPTIONS = {"heartbeat_timeout": 15_000, "maintenance_chance": 50_000, "dead_message_ttl": 7 * 86_400_000}


def redis_options(url: str) -> tuple[str, dict[str, int]]:
    """Split tagger's RedisBroker options off a broker URL; returns (URL for redis, options)."""
    from urllib.parse import parse_qsl, urlencode

    base, _, query = url.partition("?")
    options = dict(REDIS_OPTIONS)
    rest = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in REDIS_OPTIONS:
            try:
                options[key] = int(value)
            except ValueError:
                from tagger.errors import ConfigError

                raise ConfigError(f"broker URL option {key}={value!r}: an integer is expected") from None
        else:
            rest.append((key, value))  # redis-py's own options (socket_timeout, …)
    return (f"{base}?{urlencode(rest)}" if rest else base), options


def configure(settings: Settings) -> dramatiq.Broker:
    """Make the settings' broker global and declare the actors on it (once per process)."""
    global _settings, _broker
    if _broker is not None and _settings is not None and _settings.queue_url == settings.queue_url:
        _settings = settings
        return _broker
    _settings = settings
    _broker = make_broker(settings)
    dramatiq.set_broker(_broker)
    # the first import declares the actors on the broker that is global then; a later
    # broker (other settings in the same process) must get them declared explicitly
    from workers import actors

    for actor in (actors.analyse_file,):
        actor.broker = _broker
        _broker.declare_actor(actor)
    return _broker


def settings() -> Settings:
    """The settings the broker was configured with (actors read them)."""
    if _settings is None:
        from tagger import config

        configure(config.load())
    assert _settings is not None
    return _settings


def enqueue(analysis_ids: Iterable[int]) -> int:
    """Send one message per analysis; returns how many."""
    from workers.actors import analyse_file

    assert _broker is not None, "queue.configure() first"
    messages = [analyse_file.message(int(i)) for i in analysis_ids]
    if hasattr(_broker, "enqueue_many"):
        _broker.enqueue_many(messages)
    else:
        for message in messages:
            _broker.enqueue(message)
    return len(messages)


def depth(settings: Settings) -> dict[str, int]:
    """Messages waiting and in flight on the tagger queue (best effort)."""
    broker = configure(settings)
    if hasattr(broker, "pending"):
        counts = broker.pending(QUEUE_NAME)
        return {"waiting": counts.get("ready", 0), "in_flight": counts.get("taken", 0),
                "dead": counts.get("dead", 0)}
    client, key = broker.client, f"{broker.namespace}:{QUEUE_NAME}"
    waiting = client.llen(key) + client.llen(f"{key}.DQ")
    stored = client.hlen(f"{key}.msgs") + client.hlen(f"{key}.DQ.msgs")
    return {"waiting": int(waiting), "in_flight": max(0, int(stored - waiting)),
            "dead": int(client.zcard(f"{key}.XQ"))}
