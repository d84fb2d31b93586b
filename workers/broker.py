"""The broker module for ``dramatiq workers.broker`` (settings from TAGGER_* / the config file)."""
from tagger import config, queue
from tagger.workers import actors

broker = queue.configure(config.load())
actors.declare(broker)
