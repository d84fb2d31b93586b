"""``tagger serve``: a small HTTP API over the predictor and the results database.

security.py   who may call (loopback or bearer token) and which paths they may name
uploads.py    request bodies to a private temp file: raw or multipart, size-limited
predict.py    one model per process; overlapping predictions batched on one thread
queries.py    scans and files read from the results database
scans.py      scans started over HTTP, run through the queue (local workers on demand)
openapi.py    the OpenAPI 3 document, built from the same facts the handlers use
tagger/serve.py  the HTTP server and the routes
"""
