"""`tagger serve` against clumsy and hostile clients, over real sockets (issue 22, items 8 and 9).

Broken framing (a Content-Length that is not a number, negative, larger than the
body, a body that trickles in), JSON nested too deep, uploads whose decoder
errors named the server's temp files, and Host headers naming another site (DNS
rebinding). Raw sockets where requests would not send such bytes. The server
waits READ_TIMEOUT s for a silent client instead of a minute, so slow clients
take seconds to test; everything else is as served.
"""
from __future__ import annotations

import json
import random
import select
import socket
import time
from pathlib import Path

import pytest
import requests
from services import TEST_MODEL
from test_serve import _addr, assert_error, start_server

from tagger import config
from tagger.api import uploads
from tagger.api.security import host_allowed, host_name, served_names
from tagger.errors import ConfigError, UnreadableAudio, UnsupportedFormat

READ_TIMEOUT = 2.0
UPLOAD_LIMIT_MB = 2


@pytest.fixture(scope="module")
def hostile_settings(tmp_path_factory, test_model_dir) -> config.Settings:
    base = tmp_path_factory.mktemp("hostile")
    (base / "lib").mkdir()
    return config.load({"data_dir": base / "data", "model": TEST_MODEL, "model_dirs": [str(test_model_dir)],
                        "workers": 1, "min_confidence": 0.0, "library_roots": [str(base / "lib")],
                        "max_upload_mb": UPLOAD_LIMIT_MB}, environ={}, config_file=base / "none.toml")


@pytest.fixture(scope="module")
def server(hostile_settings, tmp_path_factory):
    s = hostile_settings
    served = start_server(s, tmp_path_factory.mktemp("served"), read_timeout=READ_TIMEOUT,
                          TAGGER_LIBRARY_ROOTS=s.library_roots[0], TAGGER_MAX_UPLOAD_MB=str(s.max_upload_mb))
    yield served
    assert served.stop() == 0, served.log.read_text()


def _connect(url: str) -> socket.socket:
    return socket.create_connection(_addr(url), timeout=30)


def _reply(s: socket.socket, within: float = 30) -> bytes:
    """What the server sends until it closes the connection, or ``within`` s pass."""
    deadline = time.monotonic() + within
    reply = b""
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]:
            break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        reply += chunk
    return reply


def _one_response(s: socket.socket) -> bytes:
    """One whole response on a connection kept open: its head, then as many body bytes as its
    Content-Length says (a server may send them in separate segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), b"0"))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, data
        body += chunk
    assert len(body) == length, (head, body)  # nothing of a next response mixed in
    return head + b"\r\n\r\n" + body


def _raw(url: str, request: bytes) -> bytes:
    with _connect(url) as s:
        s.sendall(request)
        return _reply(s)


def _status_and_error(reply: bytes) -> tuple[int, str]:
    """The status code and the one-line JSON error of a raw reply."""
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    doc = json.loads(body[:length])
    assert set(doc) == {"error"} and "\n" not in doc["error"] and "Traceback" not in doc["error"], doc
    return int(head.split()[1]), doc["error"]


def _request(method: str, path: str, *headers: str, body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _no_tracebacks(server) -> None:
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log and "Exception occurred" not in log, log[-3000:]


def _healthy(server) -> None:
    r = requests.get(server.url + "/v1/health", timeout=10)
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- item 8: framing and bodies


@pytest.mark.parametrize("value,status,words", [
    ("abc", 400, "not a number"), ("12abc", 400, "not a number"), ("+5", 400, "not a number"),
    ("1_0", 400, "not a number"), (" 5 5", 400, "not a number"), ("0x10", 400, "not a number"),
    ("\xb2", 400, "not a number"),  # SUPERSCRIPT TWO: str.isdigit() says yes, int() raises
    ("-5", 400, "negative"), ("-0", 400, "negative"),
    ("9" * 5000, 413, "larger"),  # int() of it raises (more than 4300 digits)
])
@pytest.mark.parametrize("method,path", [("GET", "/v1/health"), ("GET", "/v1/files"),
                                         ("POST", "/v1/predict"), ("POST", "/v1/scans")])
def test_a_content_length_that_is_not_a_length_is_refused(server, value, status, words, method, path):
    reply = _raw(server.url, _request(method, path, f"Content-Length: {value}", "Content-Type: application/json",
                                      body=b"{}"))
    got, message = _status_and_error(reply)
    assert got == status and words in message, (got, message)
    assert b"connection: close" in reply.lower()  # the body's end is unknown: nothing more is read from it
    _healthy(server)
    _no_tracebacks(server)


def test_a_good_content_length_leaves_the_connection_as_the_client_asked(server):
    # kept open by default: two requests on one connection
    with _connect(server.url) as s:
        for _ in range(2):
            s.sendall(_request("GET", "/v1/health", "Content-Length: 0"))
            head = _one_response(s)
            assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower(), head
    # closed at once when asked, not after the idle timeout
    t = time.monotonic()
    reply = _raw(server.url, _request("GET", "/v1/health", "Content-Length: 0", "Connection: close"))
    assert reply.startswith(b"HTTP/1.1 200") and time.monotonic() - t < READ_TIMEOUT / 2


def test_conflicting_content_lengths_are_refused(server):
    reply = _raw(server.url, _request("POST", "/v1/scans", "Content-Type: application/json",
                                      "Content-Length: 2", "Content-Length: 30", body=b"{}"))
    assert _status_and_error(reply) == (400, "more than one Content-Length, and they differ")
    _no_tracebacks(server)


def test_json_nested_too_deep_is_a_400(server):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"paths": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                 b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        r = requests.post(server.url + "/v1/scans", data=body, headers={"Content-Type": "application/json"},
                          timeout=60)
        assert_error(r, 400, "nested too deeply")
    _no_tracebacks(server)


def test_bodies_over_the_limit_are_413_before_they_are_sent(server):
    limit = UPLOAD_LIMIT_MB * 1024 * 1024
    for path, length in (("/v1/predict", limit + 1), ("/v1/scans", (1 << 20) + 1)):
        with _connect(server.url) as s:
            s.sendall(_request("POST", path, f"Content-Length: {length}", "Content-Type: application/json"))
            status, message = _status_and_error(_reply(s, within=10))
        assert status == 413 and "larger than the limit" in message, (path, message)
    # exactly at the limit is not refused for its size (it is not audio: 415)
    body = b"x" * limit
    assert_error(requests.post(server.url + "/v1/predict", data=body, timeout=60), 415)


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/scans"])
def test_a_body_shorter_than_its_content_length_is_answered_408(server, path):
    with _connect(server.url) as stalled:
        stalled.sendall(_request("POST", path, "Content-Length: 100000", "Content-Type: application/json",
                                 body=b"x" * 1000))
        t = time.monotonic()
        _healthy(server)  # the stalled client holds its own thread only
        assert time.monotonic() - t < 2
        reply = _reply(stalled, within=READ_TIMEOUT + 20)
        waited = time.monotonic() - t
    status, message = _status_and_error(reply)
    assert status == 408 and "1000 of the 100000 bytes" in message, message
    assert READ_TIMEOUT * 0.8 < waited < READ_TIMEOUT + 10
    _no_tracebacks(server)


def test_a_body_that_trickles_in_is_cut_off(server):
    # one byte every half second: never silent for the read timeout, but 100 kB would take 14 hours
    length = 100_000
    allowed = READ_TIMEOUT + length / uploads.MIN_BODY_RATE
    with _connect(server.url) as slow:
        slow.sendall(_request("POST", "/v1/predict", f"Content-Length: {length}"))
        t = time.monotonic()
        reply = b""
        while time.monotonic() - t < allowed + 15:
            try:
                slow.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([slow], [], [], 0.5)[0]:
                reply = _reply(slow, within=5)
                break
        waited = time.monotonic() - t
    status, message = _status_and_error(reply)
    assert status == 408 and "too slowly" in message, message
    assert allowed - 1 < waited < allowed + 5, (waited, allowed)
    _healthy(server)
    _no_tracebacks(server)


def _damaged(src: Path, how: str) -> bytes:
    data = src.read_bytes()
    rng = random.Random(7)
    if how == "cut":
        return data[:1000]
    return data[:3000] + bytes(rng.randrange(256) for _ in range(20000))  # garbage after the headers


@pytest.mark.parametrize("fmt,how", [("ogg", "cut"), ("opus", "cut"), ("flac", "cut"), ("m4a", "cut"),
                                     ("m4a", "garbage"), ("ogg", "garbage"), ("mp3", "garbage")])
def test_upload_errors_do_not_show_the_servers_insides(server, audio_factory, fmt, how):
    body = _damaged(audio_factory(fmt, seconds=12), how)
    for r in (requests.post(server.url + "/v1/predict", data=body, timeout=60),
              requests.post(server.url + "/v1/predict", files={"file": (f"song.{fmt}", body)}, timeout=60)):
        message = assert_error(r, r.status_code)
        assert r.status_code in (415, 422), message
        for inside in (str(server.tmpdir), "tagger-serve-", "upload-", "/tmp", "@ 0x", "#0", "Errno",
                       "Last message"):
            assert inside not in message, message
        assert len(message) < 160, message
        # a decoder's complaint is told in tagger's words, not as the decoder's last line
        assert not message.startswith(("not a readable audio file (", "decoding failed (", "corrupt audio:")), message


def test_a_path_or_pointer_leak_is_cleaned_whatever_the_decoder_says(tmp_path):
    private = [str(tmp_path / "a dir" / "tagger-serve-x1")]
    cases = {
        f"not a readable audio file ({private[0]}/upload-ab.ogg: End of file)":
            "cannot decode the uploaded audio: it ends before any audio",
        "decoding failed (Error while decoding stream #0:0: Invalid data found when processing input)":
            "cannot decode the uploaded audio: invalid data found when processing input",
        "decoding failed ([ogg @ 0x55e530065400] CRC mismatch!)": "cannot decode the uploaded audio: CRC mismatch!",
        "decoding failed (    Last message repeated 13 times)":
            "cannot decode the uploaded audio: the data is damaged or not audio",
        f"decoding failed ([Errno 1094995529] Invalid data found when processing input: '{private[0]}/upload-a.mp3')":
            "cannot decode the uploaded audio: invalid data found when processing input",
        "not a readable audio file (/var/tmp/x/upload-q.mp3: Invalid argument)":
            "cannot decode the uploaded audio: the data is damaged or not audio",
        "decoding failed (Output file #0 does not contain any stream)": "cannot decode the uploaded audio: no audio stream",
        "truncated or corrupt: 0.6 s of audio decoded, 12.0 s declared":
            "truncated or corrupt: 0.6 s of audio decoded, 12.0 s declared",
        "the audio is silent": "the audio is silent",
    }
    for raw, want in cases.items():
        got = uploads.public_error(UnreadableAudio(raw), private)
        assert isinstance(got, UnreadableAudio) and got.message == want, (raw, got.message)
    kept = uploads.public_error(UnsupportedFormat("not MP3 audio: the content is not a recognised audio format"))
    assert isinstance(kept, UnsupportedFormat) and kept.message.startswith("not MP3 audio")


# ---------------------------------------------------------------- item 9: the Host header


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "localhost.", "127.0.0.1", "127.0.0.2", "[::1]",
                                  "::1", "[::ffff:127.0.0.1]"])
def test_loopback_host_names_are_served_with_or_without_port(server, host):
    port = _addr(server.url)[1]
    for value in (host, f"{host}:{port}" if host != "::1" else "::1"):
        reply = _raw(server.url, _request("GET", "/v1/health", "Connection: close", host=value))
        assert reply.startswith(b"HTTP/1.1 200"), (value, reply[:300])


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:{port}", "localhost.attacker.example",
                                  "127.0.0.1.nip.io", "localhost@attacker.example", "127.0.0.1:80@attacker",
                                  "[::1].attacker", "10.0.0.1", "tagger.lan"])
def test_a_host_naming_another_site_is_refused(server, host):
    value = host.format(port=_addr(server.url)[1])
    for method, path, body in (("GET", "/v1/health", b""), ("GET", "/v1/files", b""),
                               ("POST", "/v1/predict", b"x" * 10), ("GET", "/openapi.json", b"")):
        reply = _raw(server.url, _request(method, path, f"Content-Length: {len(body)}", "Connection: close",
                                          body=body, host=value))
        status, message = _status_and_error(reply)
        assert status == 421 and "allowed_hosts" in message, (value, path, status, message)
        assert b"openapi" not in reply.split(b"\r\n\r\n", 1)[1]


def test_a_missing_or_doubled_host_is_refused(server):
    no_host = b"GET /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n"
    assert _status_and_error(_raw(server.url, no_host)) == (400, "the Host header is required")
    doubled = _request("GET", "/v1/health", "Host: attacker.example", "Connection: close")
    assert _status_and_error(_raw(server.url, doubled)) == (400, "more than one Host header")
    absolute = b"GET http://attacker.example/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert _status_and_error(_raw(server.url, absolute))[0] == 421
    # HTTP/1.0 has no Host header, and no browser sends such a request: served
    assert _raw(server.url, b"GET /v1/health HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_allowed_hosts_adds_names(hostile_settings, tmp_path):
    served = start_server(hostile_settings, tmp_path / "srv", TAGGER_ALLOWED_HOSTS="Tagger.LAN, media.example:8750")
    try:
        for host, status in (("tagger.lan", 200), ("tagger.lan:8750", 200), ("media.example", 200),
                             ("localhost", 200), ("attacker.example", 421), ("lan", 421)):
            r = requests.get(served.url + "/v1/health", headers={"Host": host}, timeout=10)
            assert r.status_code == status, (host, r.text)
    finally:
        assert served.stop() == 0


def test_a_malformed_allowed_host_stops_the_server_with_one_line(hostile_settings):
    from services import run_cli

    out = run_cli(hostile_settings, "serve", "--port", "0", timeout=60, TAGGER_ALLOWED_HOSTS="http://tagger.lan")
    assert out.returncode == 1 and "allowed_hosts" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_allowed_hosts_setting(tmp_path):
    assert config.load(environ={}, config_file=tmp_path / "none.toml").allowed_hosts == ()
    env = config.load(environ={"TAGGER_ALLOWED_HOSTS": " tagger.lan, ,[::1]:8750,media.example "},
                      config_file=tmp_path / "none.toml")
    assert env.allowed_hosts == ("tagger.lan", "[::1]:8750", "media.example")
    toml = tmp_path / "config.toml"
    toml.write_text('[tagger]\nallowed_hosts = ["tagger.lan", "10.0.0.5"]\n')
    assert config.load(environ={}, config_file=toml).allowed_hosts == ("tagger.lan", "10.0.0.5")


def test_host_rules_unit():
    assert host_name("[::1]:8750") == host_name("::1") == "::1"
    assert host_name("LOCALHOST.:1") == "localhost"
    for bad in ("", ":80", "a b", "a@b", "[::1", "host:port", "http://x", "x/y"):
        assert host_name(bad) is None, bad
    # the bind host is answered for; a wildcard bind names nothing
    assert served_names("myhost.lan", ()) == {"myhost.lan"}
    assert served_names("0.0.0.0", ()) == served_names("::", ()) == frozenset()
    with pytest.raises(ConfigError, match="allowed_hosts"):
        served_names("127.0.0.1", ["*.lan"])
    # the address a connection arrived at is that server's own: an IP literal cannot be rebound
    assert host_allowed("192.168.1.5:8750", frozenset(), "192.168.1.5")
    assert not host_allowed("192.168.1.6", frozenset(), "192.168.1.5")
    assert host_allowed("myhost.lan", served_names("myhost.lan", ()), "192.168.1.5")
    assert not host_allowed("attacker.example", served_names("0.0.0.0", ()), "192.168.1.5")


# ---------------------------------------------------------------- bursts and idle connections (#21)


def test_idle_and_half_sent_connections_do_not_stop_it_serving_others(server):
    from concurrent.futures import ThreadPoolExecutor

    # 40 clients that connect and say nothing, 40 that send half a request line and stop
    idle = [_connect(server.url) for _ in range(40)]
    half = [_connect(server.url) for _ in range(40)]
    for s in half:
        s.sendall(b"GET /v1/hea")
    try:
        t = time.monotonic()
        _healthy(server)
        assert time.monotonic() - t < 5  # answered at once, not after the others time out
        # a burst of 60 requests at once, each answered
        with ThreadPoolExecutor(30) as pool:
            codes = list(pool.map(lambda _: requests.get(server.url + "/v1/health", timeout=30).status_code,
                                  range(60)))
        assert codes == [200] * 60
    finally:
        for s in idle + half:
            s.close()
    # the server dropped them on its read timeout (one line in its log each, no traceback) and serves on
    time.sleep(READ_TIMEOUT + 1)
    _healthy(server)
    _no_tracebacks(server)
