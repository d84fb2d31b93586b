"""``tagger serve``: the HTTP server and its routes (stdlib ``http.server``, one thread per connection).

Every answer is JSON; every error is ``{"error": "<one line>"}`` with a
status code that says whose fault it was. Exceptions never reach a client:
anything unexpected is logged here and answered as a 500 without details.
Before any route: the Content-Length must be a plain number and the Host
header must name this server (tagger/api/security.py says which names do).
See tagger/api/ for the parts: security, uploads, predictions, queries, scans,
and the OpenAPI document.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import parse_qs, urlsplit

from tagger import __version__
from tagger.api import openapi, queries, uploads
from tagger.api.predict import Batcher, predict_file
from tagger.api.scans import ScanRunner
from tagger.api.security import (ApiError, check_bind, confine, host_allowed, is_loopback, served_names,
                                 token_matches)
from tagger.config import Settings
from tagger.errors import FileMissing, ModelBusy, ModelMissing, TaggerError, UnreadableAudio, UnsupportedFormat

log = logging.getLogger("tagger.serve")

#: the largest JSON request body (POST /v1/scans)
MAX_JSON_BYTES = 1 << 20
#: seconds a connection may stay silent before it is dropped (slow clients hold a thread);
#: a body must also keep up uploads.MIN_BODY_RATE on average
SOCKET_TIMEOUT = 60
#: the longest Content-Length read as a number (10**18 bytes is past any limit; int() of
#: thousands of digits is slow, and past 4300 it raises)
_MAX_LENGTH_DIGITS = 18

#: the status code for each kind of TaggerError a prediction raises
_STATUS = {UnsupportedFormat: 415, UnreadableAudio: 422, FileMissing: 404, ModelMissing: 503, ModelBusy: 503}


class App:
    """What the handlers share: settings, the model batcher, the scan runner, the upload folder."""

    def __init__(self, settings: Settings, token_required: bool, served_names: frozenset[str] = frozenset()):
        self.settings = settings
        self.token_required = token_required
        self.served_names = served_names  # Host names answered besides loopback ones (security.host_allowed)
        self.started = time.monotonic()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="tagger-serve-"))  # mode 0700: private to this user
        self.batcher = Batcher(settings)
        self.scans = ScanRunner(settings)
        self.openapi = json.dumps(openapi.document(token_required)).encode()

    def start(self) -> "App":
        self.batcher.start()
        return self

    def close(self) -> None:
        self.scans.stop()
        self.batcher.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


Route = tuple[str, "re.Pattern[str]", Callable[..., tuple[int, Any]]]


class Handler(BaseHTTPRequestHandler):
    server_version = f"tagger/{__version__}"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    app: App  # set on the subclass the server builds

    def version_string(self) -> str:
        return self.server_version

    # ------------------------------------------------------------ plumbing

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        # http.server's own errors (bad request line, header too long, ...) as JSON too, and with a
        # status line even when the request line was too broken to name a version (HTTP/0.9 has none)
        self.close_connection = True
        self.request_version = self.protocol_version
        self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _send(self, status: int, body: Any, headers: Optional[dict[str, str]] = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def __getattr__(self, name: str):
        # every method goes through the routes (an unknown one on a known path is a 405,
        # not http.server's 501); "do_" + the request line's method is looked up here
        if name.startswith("do_") and name[3:].isalpha() and name[3:].isupper():
            return lambda: self._dispatch(name[3:])
        raise AttributeError(name)

    def _dispatch(self, method: str) -> None:
        self.t0 = time.perf_counter()
        self.body_read = False
        self.content_length: Optional[int] = None
        self.extra_headers = None
        url = urlsplit(self.path)
        try:
            self.content_length = self._content_length()
            self._check_host(url.netloc)
            self.query = parse_qs(url.query, keep_blank_values=True, max_num_fields=100)
        except ApiError as exc:
            self._fail(exc)
            return
        except ValueError:
            self._fail(ApiError(400, "too many query parameters"))
            return
        allowed = []
        for verb, pattern, func in ROUTES:
            m = pattern.fullmatch(url.path)
            if not m:
                continue
            if verb != method:
                allowed.append(verb)
                continue
            try:
                if func is not health:
                    self._authorise()
                status, body = func(self, **m.groupdict())
                self._finish_body()
                self._send(status, body, self.extra_headers)
            except ApiError as exc:
                self._fail(exc)
            except TaggerError as exc:
                self._fail(ApiError(_status_of(exc), exc.message))
            except (TimeoutError, ConnectionError):
                self.close_connection = True  # the client went silent or away: nobody to answer
            except Exception:
                log.exception("internal error on %s %s", method, url.path)
                self._fail(ApiError(500, "internal error (details are in the server log)"))
            return
        if allowed:
            self._fail(ApiError(405, f"{method} is not allowed here", {"Allow": ", ".join(sorted(set(allowed)))}))
        else:
            self._fail(ApiError(404, f"no such endpoint: {url.path}"))

    def _fail(self, exc: ApiError) -> None:
        self._finish_body()
        self._send(exc.status, {"error": exc.message}, exc.headers)

    def _finish_body(self) -> None:
        # a body left unread would be parsed as the next request: drop the connection instead
        if not self.body_read and (self.content_length or 0) > 0:
            self.close_connection = True
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def _content_length(self) -> Optional[int]:
        """The Content-Length header as a number; None without one. Raises ApiError (400, 413).

        Only plain ASCII digits: int() would also take "+5", " 5", "1_0" and
        other scripts' digits, which a proxy in front may read differently. A
        request whose length is unknown cannot be framed, so the connection
        closes after the answer.
        """
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return None
        keep = self.close_connection  # what the request's Connection header and version decided
        self.close_connection = True  # until the value is known to be good
        texts = {v.strip() for v in values}
        if len(texts) > 1:
            raise ApiError(400, "more than one Content-Length, and they differ")
        text = texts.pop()
        if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
            raise ApiError(400, "Content-Length is negative")
        if not (text.isascii() and text.isdigit()):
            raise ApiError(400, "Content-Length is not a number")
        if len(text.lstrip("0")) > _MAX_LENGTH_DIGITS:
            raise ApiError(413, "Content-Length is larger than any body this server accepts")
        self.close_connection = keep
        return int(text)

    def _check_host(self, target_authority: str) -> None:
        """Refuse a request that names another server (DNS rebinding); raises ApiError."""
        values = self.headers.get_all("Host") or []
        if len(values) > 1:
            raise ApiError(400, "more than one Host header")
        if not values and self.request_version == "HTTP/1.0" and not target_authority:
            return  # HTTP/1.0 has no Host; no browser sends such a request, so nothing is rebound
        if not values:
            raise ApiError(400, "the Host header is required")
        local = self.connection.getsockname()[0]
        for name in filter(None, (values[0], target_authority)):  # an absolute-form target names a host too
            if not host_allowed(name, self.app.served_names, local):
                # 421 Misdirected Request (RFC 9110, 15.5.20): the request names an authority this
                # server does not answer for, which is exactly the case. 403 would say the caller
                # lacks a permission, but no credential changes this answer; only the name does.
                raise ApiError(421, "this server does not answer for that Host name "
                                    "(allowed_hosts / TAGGER_ALLOWED_HOSTS)")

    def _authorise(self) -> None:
        token = self.app.settings.api_token
        if token and not token_matches(self.headers.get("Authorization"), token):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                           {"WWW-Authenticate": 'Bearer realm="tagger"'})

    # ------------------------------------------------------------ request parts

    def arg(self, name: str) -> Optional[str]:
        values = self.query.get(name)
        if not values:
            return None
        if "\x00" in values[-1]:
            raise ApiError(400, f"{name}: NUL characters are not allowed")
        return values[-1]

    def int_arg(self, name: str, default: int, lo: int, hi: int) -> int:
        text = self.arg(name)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer") from None
        if not lo <= value <= hi:
            raise ApiError(400, f"{name} must be between {lo} and {hi}")
        return value

    def body_length(self, limit: int, what: str) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "chunked bodies are not accepted: send Content-Length")
        length = self.content_length  # checked to be a number before any route ran
        if length is None:
            raise ApiError(411, "Content-Length is required")
        if length > limit:
            raise ApiError(413, f"{what} of {length} bytes is larger than the limit of {limit} bytes")
        return length

    def body(self, length: int) -> Iterator[bytes]:
        """The body's chunks as they arrive (``uploads.body_chunks``: 400 cut short, 408 too slow)."""
        yield from uploads.body_chunks(self.rfile, self.connection, length, self.timeout)
        self.body_read = True


def _status_of(exc: TaggerError) -> int:
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return status
    return 422


# ---------------------------------------------------------------- routes


def health(h: Handler) -> tuple[int, Any]:
    b = h.app.batcher
    status = "degraded" if b.error else ("ok" if b.ready.is_set() else "starting")
    return 200, {"status": status, "version": __version__, "model_ready": b.health()["ready"]}


def openapi_json(h: Handler) -> tuple[int, Any]:
    return 200, h.app.openapi


def predict(h: Handler) -> tuple[int, Any]:
    app = h.app
    path = h.arg("path")
    has_body = bool(h.headers.get("Transfer-Encoding")) or (h.content_length or 0) > 0
    if path is not None and has_body:
        raise ApiError(400, "send either an upload or ?path=, not both")
    if path is not None:
        real = confine(path, app.settings.library_roots)
        if not os.path.isfile(real):
            raise ApiError(404, "no such file under the library roots")
        result = predict_file(real, app.settings, app.batcher)
        source = "path"
    else:
        limit = app.settings.max_upload_mb * 1024 * 1024
        length = h.body_length(limit, "the upload")
        if length == 0:
            raise ApiError(400, "send an audio file (the raw body or the multipart field \"file\") or ?path=")
        fd, name = tempfile.mkstemp(dir=app.tmpdir, prefix="upload-")
        os.close(fd)
        files = [Path(name)]
        try:
            uploads.receive(h.body(length), files[0])
            ctype, params = uploads.header_params(h.headers.get("Content-Type") or "application/octet-stream")
            filename = h.arg("filename")
            audio_file = files[0]
            if ctype == "multipart/form-data":
                audio_file = files[0].with_name(files[0].name + "-part")
                files.append(audio_file)
                filename = uploads.extract_part(files[0], params.get("boundary", ""), audio_file) or filename
            if audio_file.stat().st_size == 0:
                raise ApiError(400, "the uploaded file is empty (0 bytes)")
            named = uploads.name_by_content(audio_file, filename)
            files.append(named)
            try:
                result = predict_file(str(named), app.settings, app.batcher)
            except TaggerError as exc:
                # the decoder's words name the temp file and its own internals: the log keeps
                # them, the client gets the reason alone
                log.info("upload refused: %s", exc.message)
                raise uploads.public_error(exc, (str(app.tmpdir), os.path.realpath(app.tmpdir))) from None
        finally:
            for f in files:
                f.unlink(missing_ok=True)
        source = "upload"
    result["source"] = source
    result["timings_ms"]["total"] = round((time.perf_counter() - h.t0) * 1000, 2)
    return 200, result


def list_scans(h: Handler) -> tuple[int, Any]:
    page = h.int_arg("page", 1, 1, openapi.MAX_PAGE)
    per_page = h.int_arg("per_page", 50, 1, openapi.MAX_PER_PAGE)
    return 200, queries.list_scans(h.app.settings, page, per_page)


def get_scan(h: Handler, scan_id: str) -> tuple[int, Any]:
    doc = queries.scan_summary(h.app.settings, int(scan_id))
    if doc is None:
        raise ApiError(404, f"no scan {scan_id}")
    return 200, doc


def list_files(h: Handler) -> tuple[int, Any]:
    page = h.int_arg("page", 1, 1, openapi.MAX_PAGE)
    per_page = h.int_arg("per_page", 50, 1, openapi.MAX_PER_PAGE)
    min_conf = h.arg("min_confidence")
    value = None
    if min_conf not in (None, ""):
        try:
            value = float(min_conf)
        except ValueError:
            raise ApiError(400, "min_confidence must be a number") from None
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ApiError(400, "min_confidence must be between 0 and 1")
    return 200, queries.list_files(h.app.settings, page, per_page, genre=h.arg("genre") or None,
                                   min_confidence=value, q=h.arg("q") or None)


def start_scan(h: Handler) -> tuple[int, Any]:
    app = h.app
    ctype, _ = uploads.header_params(h.headers.get("Content-Type") or "")
    length = h.body_length(MAX_JSON_BYTES, "the request body")
    if ctype != "application/json":
        raise ApiError(415, "send the scan request as application/json")
    raw = b"".join(h.body(length))
    try:
        doc = json.loads(raw)
    except RecursionError:  # the decoder's recursion limit: a 1 MiB body can nest 500k deep
        raise ApiError(400, "the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, 'the body must be a JSON object: {"paths": [...], "dry_run": false, "force": false}')
    unknown = set(doc) - {"paths", "dry_run", "force"}
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    paths = doc.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ApiError(400, "paths must be a non-empty list of strings")
    if len(paths) > openapi.MAX_SCAN_PATHS:
        raise ApiError(400, f"at most {openapi.MAX_SCAN_PATHS} paths per scan")
    flags = {}
    for key in ("dry_run", "force"):
        flags[key] = doc.get(key, False)
        if not isinstance(flags[key], bool):
            raise ApiError(400, f"{key} must be true or false")
    roots = []
    for p in paths:
        real = confine(p, app.settings.library_roots)
        if not os.path.exists(real):
            raise ApiError(404, f"no such file or folder under the library roots: {p}")
        roots.append(real)
    scan_id = app.scans.start(roots, dry_run=flags["dry_run"], force=flags["force"])
    h.extra_headers = {"Location": f"/v1/scans/{scan_id}"}
    return 202, {"scan_id": scan_id, "status": "running", "url": f"/v1/scans/{scan_id}"}


ROUTES: list[Route] = [
    ("GET", re.compile(r"/v1/health"), health),
    ("GET", re.compile(r"/openapi\.json"), openapi_json),
    ("POST", re.compile(r"/v1/predict"), predict),
    ("GET", re.compile(r"/v1/scans"), list_scans),
    ("POST", re.compile(r"/v1/scans"), start_scan),
    ("GET", re.compile(r"/v1/scans/(?P<scan_id>[0-9]{1,19})"), get_scan),
    ("GET", re.compile(r"/v1/files"), list_files),
]


# ---------------------------------------------------------------- the server


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def make_server(settings: Settings, host: str, port: int) -> tuple[Server, App]:
    """Check the bind rules, prepare the database and queue, and bind; nothing is served yet."""
    from tagger import queue, scan as scan_mod

    check_bind(host, settings.api_token)
    names = served_names(host, settings.allowed_hosts)
    scan_mod.prepare_database(settings)
    queue.configure(settings)
    app = App(settings, token_required=bool(settings.api_token), served_names=names)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server_cls = Server
    if ":" in host:
        server_cls = type("Server6", (Server,), {"address_family": socket.AF_INET6})
    try:
        server = server_cls((host, port), handler)
    except OSError as exc:
        app.close()
        from tagger.errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server, app


def run(settings: Settings, host: str = "127.0.0.1", port: int = 8750) -> None:
    """Serve until SIGTERM or Ctrl-C; local workers and unfinished scans are cleaned up on the way out."""
    from tagger.models import runtime

    runtime.set_precision(settings.precision)
    runtime.set_runtime(settings.runtime)
    runtime.set_student(settings.student)
    server, app = make_server(settings, host, port)
    app.start()
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    auth = "bearer token required" if settings.api_token else "no token (loopback only)"
    print(f"tagger serve: listening on http://{shown}:{bound_port} ({auth})", file=sys.stderr, flush=True)

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        app.close()
    print("tagger serve: stopped", file=sys.stderr, flush=True)


__all__ = ["run", "make_server", "is_loopback", "check_bind"]
