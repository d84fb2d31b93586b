"""The actors: declared on a broker by the processes that run jobs (``declare``), never at import."""
from __future__ import annotations

import dramatiq

from tagger import pipeline, queue


def analyse_file(analysis_id: int) -> None:
    """One file of one scan: all the work is ``tagger.pipeline.analyse``."""
    pipeline.analyse(analysis_id, queue.settings())


def declare(broker: dramatiq.Broker) -> None:
    """Declare the actors on ``broker`` (once)."""
    if queue.ANALYSE not in broker.actors:
        dramatiq.Actor(analyse_file, broker=broker, actor_name=queue.ANALYSE, queue_name=queue.QUEUE_NAME,
                       priority=0, options={})
