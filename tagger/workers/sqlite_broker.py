"""A Dramatiq broker kept in a SQLite file: the embedded default's queue.

With no Redis configured, ``tagger scan`` still runs its jobs through the same
Dramatiq actors and ``Worker`` as the distributed mode; only the transport
differs. Messages live in one table; a worker claims a message atomically
(``UPDATE … RETURNING``), deletes it on ack, and marks it dead on nack. A
message claimed by a process that has since died on this host goes back to
the queue, so a killed worker loses nothing (at-least-once, as with Redis).
"""
from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Optional

from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import QueueNotFound
from dramatiq.message import Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    data BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready',   -- ready | taken | dead
    owner TEXT,                            -- host:pid of the claiming process
    taken_at REAL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, state, id);
"""

#: how long an idle consumer sleeps between polls (seconds)
POLL_INTERVAL = 0.05
#: how often a consumer looks for messages held by dead processes (seconds)
RECLAIM_INTERVAL = 2.0


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SQLiteBroker(Broker):
    """A Dramatiq broker over one SQLite file, for workers on one host.

    Parameters
    ----------
    path : the queue file; created with its directory when missing.
    middleware : as for :class:`dramatiq.Broker`.
    """

    def __init__(self, path: str | Path, middleware=None):
        super().__init__(middleware=middleware)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    # one connection per thread: sqlite3 connections must not cross threads
    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        return _SQLiteConsumer(self, queue_name, timeout, prefetch)

    def declare_queue(self, queue_name: str) -> None:
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = None
        self.emit_after("declare_queue", queue_name)
        delayed = dq_name(queue_name)
        self.queues[delayed] = None
        self.delay_queues.add(delayed)
        self.emit_after("declare_delay_queue", delayed)

    def enqueue(self, message: Message, *, delay: Optional[int] = None) -> Message:
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        self.emit_before("enqueue", message, delay)
        self._connect().execute(
            "INSERT INTO messages (queue, data) VALUES (?, ?)", (queue_name, message.encode())
        )
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_many(self, messages: Iterable[Message]) -> None:
        """Enqueue several messages in one transaction (a scan queues thousands)."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            for message in messages:
                if message.queue_name not in self.queues:
                    raise QueueNotFound(message.queue_name)
                self.emit_before("enqueue", message, None)
                db.execute(
                    "INSERT INTO messages (queue, data) VALUES (?, ?)", (message.queue_name, message.encode())
                )
                self.emit_after("enqueue", message, None)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def flush(self, queue_name: str) -> None:
        self._connect().execute("DELETE FROM messages WHERE queue = ?", (queue_name,))

    def flush_all(self) -> None:
        for queue_name in list(self.queues):
            self.flush(queue_name)

    def pending(self, queue_name: str | None = None) -> dict[str, int]:
        """Messages by state (ready, taken, dead), for one queue or all."""
        sql = "SELECT state, COUNT(*) FROM messages"
        args: tuple = ()
        if queue_name is not None:
            sql += " WHERE queue IN (?, ?)"
            args = (queue_name, dq_name(queue_name))
        rows = self._connect().execute(sql + " GROUP BY state", args).fetchall()
        return {state: n for state, n in rows}

    def join(self, queue_name: str, *, timeout: Optional[int] = None) -> None:
        """Wait until no ready or taken message is left on the queue (tests, scripts)."""
        deadline = timeout and time.monotonic() + timeout / 1000
        while True:
            counts = self.pending(queue_name)
            if not counts.get("ready") and not counts.get("taken"):
                return
            if deadline and time.monotonic() > deadline:
                raise TimeoutError(f"queue {queue_name} did not drain")
            time.sleep(POLL_INTERVAL)

    def reclaim_dead(self) -> int:
        """Put back messages claimed by processes of this host that no longer run."""
        db = self._connect()
        host = socket.gethostname()
        rows = db.execute(
            "SELECT DISTINCT owner FROM messages WHERE state = 'taken' AND owner LIKE ?", (host + ":%",)
        ).fetchall()
        freed = 0
        for (owner,) in rows:
            pid = int(owner.rsplit(":", 1)[1])
            if not _pid_alive(pid):
                cur = db.execute(
                    "UPDATE messages SET state = 'ready', owner = NULL, taken_at = NULL "
                    "WHERE state = 'taken' AND owner = ?",
                    (owner,),
                )
                freed += cur.rowcount
        return freed


class _SQLiteMessageProxy(MessageProxy):
    def __init__(self, message: Message, row_id: int):
        super().__init__(message)
        self.row_id = row_id


class _SQLiteConsumer(Consumer):
    def __init__(self, broker: SQLiteBroker, queue_name: str, timeout_ms: int, prefetch: int = 1):
        self.broker = broker
        self.queue_name = queue_name
        self.timeout = timeout_ms / 1000
        self.owner = _owner()
        self._last_reclaim = 0.0
        # messages claimed and not yet acked, nacked or requeued: without this bound the
        # first worker to start would claim the whole queue and leave the others idle
        self.prefetch = max(1, prefetch)
        self._held = 0
        self._held_lock = threading.Lock()

    def _release(self, n: int = 1) -> None:
        with self._held_lock:
            self._held = max(0, self._held - n)

    def _claim(self) -> Optional[tuple[int, bytes]]:
        return (
            self.broker._connect()
            .execute(
                "UPDATE messages SET state = 'taken', owner = ?, taken_at = ? WHERE id = ("
                " SELECT id FROM messages WHERE queue = ? AND state = 'ready' ORDER BY id LIMIT 1"
                ") RETURNING id, data",
                (self.owner, time.time(), self.queue_name),
            )
            .fetchone()
        )

    def __next__(self) -> Optional[MessageProxy]:
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            if now - self._last_reclaim > RECLAIM_INTERVAL:
                self._last_reclaim = now
                self.broker.reclaim_dead()
            with self._held_lock:
                full = self._held >= self.prefetch
            row = None if full else self._claim()
            if row is not None:
                with self._held_lock:
                    self._held += 1
                return _SQLiteMessageProxy(Message.decode(row[1]), row[0])
            if time.monotonic() >= deadline:
                return None  # lets the worker do its housekeeping
            time.sleep(POLL_INTERVAL)

    def ack(self, message: _SQLiteMessageProxy) -> None:
        self.broker._connect().execute("DELETE FROM messages WHERE id = ?", (message.row_id,))
        self._release()

    def nack(self, message: _SQLiteMessageProxy) -> None:
        self.broker._connect().execute(
            "UPDATE messages SET state = 'dead', owner = NULL WHERE id = ?", (message.row_id,)
        )
        self._release()

    def requeue(self, messages: Iterable[_SQLiteMessageProxy]) -> None:
        ids = [(m.row_id,) for m in messages]
        self.broker._connect().executemany(
            "UPDATE messages SET state = 'ready', owner = NULL, taken_at = NULL WHERE id = ?", ids
        )
        self._release(len(ids))

    def close(self) -> None:
        pass
