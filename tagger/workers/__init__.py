"""Where jobs run: the actors, the middleware that retries and records their failures,
the worker processes, and the SQLite broker of the embedded default.

``tagger.queue`` builds the broker and sends messages by actor name; it never imports
this package's actors, which only worker processes declare.
"""
