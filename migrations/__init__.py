"""Alembic migrations of the results database (``tagger db upgrade``)."""
