"""The broker module for ``dramatiq workers.broker`` (settings from TAGGER_* / the config file)."""
from tagger import config, queue

broker = queue.configure(config.load())
