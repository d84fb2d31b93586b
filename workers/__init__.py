"""Entry point for Dramatiq's own command line (``dramatiq workers.broker``); the actors
live in ``tagger.workers``."""
