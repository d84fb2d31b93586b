"""The embedded default's broker: at-least-once over a SQLite file, across processes."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import dramatiq
from dramatiq.message import Message

from tagger.workers.sqlite_broker import SQLiteBroker


def _msg(i):
    return Message(queue_name="q", actor_name="a", args=(i,), kwargs={}, options={})


def test_enqueue_consume_ack_in_order(tmp_path):
    broker = SQLiteBroker(tmp_path / "q.sqlite3")
    broker.declare_queue("q")
    broker.enqueue_many([_msg(i) for i in range(3)])
    consumer = broker.consume("q", prefetch=3, timeout=100)
    got = [next(consumer) for _ in range(3)]
    assert [m.args[0] for m in got] == [0, 1, 2]
    assert next(consumer) is None  # empty: times out
    for m in got[:2]:
        consumer.ack(m)
    consumer.nack(got[2])
    assert broker.pending("q") == {"dead": 1}


def test_requeued_messages_come_back(tmp_path):
    broker = SQLiteBroker(tmp_path / "q.sqlite3")
    broker.declare_queue("q")
    broker.enqueue(_msg(7))
    consumer = broker.consume("q", timeout=100)
    m = next(consumer)
    consumer.requeue([m])
    assert next(consumer).args == (7,)


def test_message_of_a_killed_process_is_redelivered(tmp_path):
    path = tmp_path / "q.sqlite3"
    broker = SQLiteBroker(path)
    broker.declare_queue("q")
    broker.enqueue(_msg(1))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from tagger.workers.sqlite_broker import SQLiteBroker
        b = SQLiteBroker({str(path)!r}); b.declare_queue("q")
        m = next(b.consume("q", timeout=5000))
        print("claimed", m.args, flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().startswith("claimed")
    consumer = broker.consume("q", timeout=200)
    assert next(consumer) is None  # taken by the live process
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    time.sleep(0.1)
    assert broker.reclaim_dead() == 1
    assert next(consumer).args == (1,)


def test_dramatiq_worker_runs_actors_with_delayed_retries(tmp_path):
    broker = SQLiteBroker(tmp_path / "q.sqlite3")
    seen = []

    @dramatiq.actor(broker=broker, queue_name="q", max_retries=2, min_backoff=50, max_backoff=100)
    def flaky(n):
        seen.append(n)
        if len(seen) < 2:
            raise RuntimeError("first try fails")

    flaky.send(5)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("q", timeout=10_000)
    finally:
        worker.stop()
    assert seen == [5, 5]
    assert broker.pending("q") == {}
    assert os.path.exists(tmp_path / "q.sqlite3")


def test_a_consumer_holds_at_most_prefetch_messages(tmp_path):
    """Otherwise the first worker to start claims the whole queue and the others idle."""
    broker = SQLiteBroker(tmp_path / "q.sqlite3")
    broker.declare_queue("q")
    broker.enqueue_many([_msg(i) for i in range(5)])
    first = broker.consume("q", prefetch=2, timeout=100)
    held = [next(first), next(first)]
    assert next(first) is None  # full: it claims no more
    second = broker.consume("q", prefetch=2, timeout=100)
    assert next(second).args == (2,)  # the rest is there for another worker
    first.ack(held[0])
    assert next(first).args == (3,)


def test_a_second_broker_in_one_process_gets_the_actors(tmp_path):
    from tagger import config, queue
    from tagger.workers import actors

    for name in ("a", "b"):
        settings = config.load({"data_dir": tmp_path / name}, environ={}, config_file=tmp_path / "none.toml")
        broker = queue.configure(settings)
        assert "analyse_file" not in broker.get_declared_actors()  # sending needs no actor
        actors.declare(broker)
        assert "analyse_file" in broker.get_declared_actors()
        assert queue.enqueue([1]) == 1
        assert broker.pending(queue.QUEUE_NAME) == {"ready": 1}
