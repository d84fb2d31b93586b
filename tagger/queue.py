"""Broker set-up and enqueueing: the local SQLite queue or Redis, same actors.

``configure(settings)`` builds the broker the settings name (with the retry and
failure-recording middleware of ``tagger.workers.middleware``) and makes it
Dramatiq's global broker. Messages are sent by actor name, so this module never
imports the actors: worker processes declare them (``tagger.workers.actors``).
"""
from __future__ import annotations

from typing import Iterable, Optional

import dramatiq

from tagger.config import Settings

QUEUE_NAME = "tagger"
#: the actor that analyses one file (``tagger.workers.actors.analyse_file``)
ANALYSE = "analyse_file"

_settings: Optional[Settings] = None
_broker: Optional[dramatiq.Broker] = None


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.queue_url
    if url.startswith(("redis://", "rediss://", "unix://")):
        from dramatiq.brokers.redis import RedisBroker

        url, options = redis_options(url)
        broker = RedisBroker(url=url, **options)
    elif url.startswith("sqlite:///"):
        from tagger.workers.sqlite_broker import SQLiteBroker

        broker = SQLiteBroker(url[len("sqlite:///"):])
    else:
        from tagger.errors import ConfigError

        raise ConfigError(f"unsupported broker URL {url!r} (use redis://… or sqlite:///…)")
    from tagger.workers import middleware

    middleware.install(broker, settings, ANALYSE, lambda: _settings or settings)
    broker.declare_queue(QUEUE_NAME)
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
    """Make the settings' broker global (once per process and broker URL)."""
    global _settings, _broker
    if _broker is not None and _settings is not None and _settings.queue_url == settings.queue_url:
        _settings = settings
        return _broker
    _settings = settings
    _broker = make_broker(settings)
    dramatiq.set_broker(_broker)
    return _broker


def settings() -> Settings:
    """The settings the broker was configured with (actors and middleware read them)."""
    if _settings is None:
        from tagger import config

        configure(config.load())
    assert _settings is not None
    return _settings


def enqueue(analysis_ids: Iterable[int]) -> int:
    """Send one message per analysis; returns how many."""
    assert _broker is not None, "queue.configure() first"
    messages = [dramatiq.Message(queue_name=QUEUE_NAME, actor_name=ANALYSE, args=(int(i),), kwargs={}, options={})
                for i in analysis_ids]
    if hasattr(_broker, "enqueue_many"):
        _broker.enqueue_many(messages)
    else:
        for message in messages:
            _broker.enqueue(message)
    return len(messages)


def clear() -> None:
    """Drop every message waiting in the queue (an interrupted scan's, when it was the only one)."""
    if _broker is not None:
        _broker.flush(QUEUE_NAME)


def depth(settings: Settings) -> dict[str, int]:
    """Messages waiting and in flight on the tagger queue (best effort)."""
    broker = configure(settings)
    if hasattr(broker, "pending"):
        counts = broker.pending(QUEUE_NAME)
        return {"waiting": counts.get("ready", 0), "in_flight": counts.get("taken", 0),
                "dead": counts.get("dead", 0)}
    # RedisBroker has no count of its own: these are its keys (Dramatiq 2.x), pinned by
    # tests against a real Redis (test_distributed: status --json after queueing and failing)
    client, key = broker.client, f"{broker.namespace}:{QUEUE_NAME}"
    waiting = client.llen(key) + client.llen(f"{key}.DQ")
    stored = client.hlen(f"{key}.msgs") + client.hlen(f"{key}.DQ.msgs")
    return {"waiting": int(waiting), "in_flight": max(0, int(stored - waiting)),
            "dead": int(client.zcard(f"{key}.XQ"))}
