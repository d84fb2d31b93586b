"""`tagger serve` over real HTTP: a started server process, a real client (requests), real audio.

One server per module (starting one costs a few seconds); tests that need other
settings start their own. The library root holds real audio made with ffmpeg
and real GTZAN clips.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import audiofiles
import pytest
import requests
from services import TEST_MODEL, cli_env, run_cli

from tagger import config, pipeline
from tagger.api.security import check_bind, confine, is_loopback, token_matches, ApiError
from tagger.errors import ConfigError

UPLOAD_LIMIT_MB = 4
DURATION_LIMIT_S = 40


# ---------------------------------------------------------------- a served process


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    log: Path
    tmpdir: Path  # the server's TMPDIR: its private upload folder lives here

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=120, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=120, **kw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


#: ``python -c`` for a server whose idle timeout is argv[1] seconds instead of a minute (the same
#: code, only waiting less, so tests of slow clients take seconds)
_SHORT_TIMEOUT = ("import sys; from tagger import serve; serve.Handler.timeout = float(sys.argv.pop(1)); "
                  "from tagger.cli import entry; entry()")


def start_server(settings: config.Settings, where: Path, host: str = "127.0.0.1",
                 read_timeout: float | None = None, **env: str) -> Served:
    """``python -m tagger serve --port 0`` with the settings; returns once the model is loaded.

    ``read_timeout``: the server's socket timeout (how long a silent client is waited for).
    """
    where.mkdir(parents=True, exist_ok=True)
    tmpdir = where / "tmp"
    tmpdir.mkdir(exist_ok=True)
    log = where / "serve.log"
    python = [sys.executable, "-m", "tagger"]
    if read_timeout is not None:
        python = [sys.executable, "-c", _SHORT_TIMEOUT, str(read_timeout)]
    with open(log, "wb") as err:
        proc = subprocess.Popen([*python, "serve", "--host", host, "--port", "0"],
                                env=cli_env(settings, TMPDIR=str(tmpdir), **env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 90
    url = None
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if proc.poll() is not None:
            pytest.fail(f"tagger serve exited with {proc.returncode}:\n{text}")
        m = re.search(r"listening on (http://\S+)", text)
        if m:
            url = m.group(1)
            try:
                if requests.get(url + "/v1/health", timeout=5).json()["model_ready"]:
                    return Served(proc, url, log, tmpdir)
            except requests.ConnectionError:
                pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"tagger serve did not become ready (url {url}):\n{log.read_text(errors='replace')}")


def _addr(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _raw(url: str, request: bytes) -> str:
    """Send bytes as they are; everything the server answers before it closes the connection."""
    with socket.create_connection(_addr(url), timeout=30) as s:
        s.sendall(request)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply.decode("utf-8", "replace")


def assert_error(r: requests.Response, status: int, words: str = "") -> str:
    """A JSON error with this status and a one-line message (no traceback)."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"error"}
    message = doc["error"]
    assert message and "\n" not in message and "Traceback" not in message
    assert words.lower() in message.lower(), message
    return message


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory, test_model_dir) -> config.Settings:
    base = tmp_path_factory.mktemp("serve")
    lib = base / "lib"
    lib.mkdir()
    return config.load({"data_dir": base / "data", "model": TEST_MODEL, "model_dirs": [str(test_model_dir)],
                        "workers": 1, "min_confidence": 0.0, "library_roots": [str(lib)],
                        "max_upload_mb": UPLOAD_LIMIT_MB, "max_duration_s": DURATION_LIMIT_S},
                       environ={}, config_file=base / "none.toml")


def _env(settings: config.Settings) -> dict[str, str]:
    return {"TAGGER_LIBRARY_ROOTS": os.pathsep.join(settings.library_roots),
            "TAGGER_MAX_UPLOAD_MB": str(settings.max_upload_mb),
            "TAGGER_MAX_DURATION_S": str(settings.max_duration_s)}


@pytest.fixture(scope="module")
def library(module_settings, audio_cache, gtzan) -> dict[str, Path]:
    lib = Path(module_settings.library_roots[0])
    make = audiofiles.AudioFactory(audio_cache, lib)
    files = {
        "mp3": make("mp3", name="songs/song.mp3", seconds=12),
        "flac": make("flac", name="songs/song.flac", seconds=12),
        "wav": make("wav", name="songs/tone.wav", seconds=12, kind="tone"),
    }
    for genre in ("blues", "classical", "metal", "pop"):
        clip = sorted((gtzan / genre).glob("*.mp3"))[-1]  # the model fixture trains on the first 8
        dest = lib / "gtzan" / genre / clip.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(clip.read_bytes())
        files[genre] = dest
    return files


@pytest.fixture(scope="module")
def served(module_settings, library, tmp_path_factory) -> Served:
    server = start_server(module_settings, tmp_path_factory.mktemp("served"), **_env(module_settings))
    yield server
    assert server.stop() == 0, server.log.read_text()


# ---------------------------------------------------------------- predictions


def _expected(path: Path, settings: config.Settings):
    prediction, _ = pipeline.predict_path(str(path), settings)
    return prediction


def test_upload_raw_and_multipart_match_the_pipeline(served, library, module_settings):
    for fmt in ("mp3", "flac", "wav"):
        path = library[fmt]
        want = _expected(path, module_settings)
        raw = served.post("/v1/predict", data=path.read_bytes(), headers={"Content-Type": "application/octet-stream"})
        multi = served.post("/v1/predict", files={"file": (path.name, path.read_bytes(), "audio/mpeg")})
        for r in (raw, multi):
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["source"] == "upload" and doc["format"] == fmt
            assert doc["genre"] == want.genre
            assert doc["confidence"] == pytest.approx(want.confidence, abs=1e-5)
            assert [t["genre"] for t in doc["top"]] == [g for g, _ in want.top]
            probs = [t["probability"] for t in doc["top"]]
            assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
            assert doc["model"] == TEST_MODEL and doc["decided_by"] == "fallback"
            assert doc["duration_s"] == pytest.approx(12.0, abs=0.1)
            t = doc["timings_ms"]
            assert t["decode"] > 0 and t["predict"] > 0 and t["total"] >= t["decode"] + t["predict"]


def test_the_format_comes_from_the_content_not_the_name(served, library):
    # a FLAC upload named .mp3 is analysed as the FLAC it is
    r = served.post("/v1/predict", files={"file": ("misnamed.mp3", library["flac"].read_bytes())})
    assert r.status_code == 200, r.text
    assert r.json()["format"] == "flac"


def test_bad_uploads_are_refused_with_one_line_reasons(served, library, tmp_path):
    text = audiofiles.text_as_audio(tmp_path, "notes.mp3")
    assert_error(served.post("/v1/predict", data=text.read_bytes()), 415, "not a recognised audio format")
    assert_error(served.post("/v1/predict", files={"file": ("notes.mp3", text.read_bytes())}), 415, "not MP3 audio")
    assert_error(served.post("/v1/predict", data=b""), 400, "send an audio file")
    assert_error(served.post("/v1/predict", files={"file": ("e.mp3", b"")}), 400, "empty")
    assert_error(served.post("/v1/predict", files={"other": ("a.mp3", library["mp3"].read_bytes())}), 400,
                 '"file" part')
    cut = audiofiles.truncated(library["mp3"], tmp_path / "cut.mp3", 0.05)
    msg = assert_error(served.post("/v1/predict", data=cut.read_bytes()), 422)
    assert "short" in msg or "truncated" in msg
    # a multipart body cut before its closing boundary
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\r\n"
            + library["mp3"].read_bytes()[:5000])
    assert_error(served.post("/v1/predict", data=body, headers={"Content-Type": "multipart/form-data; boundary=xyz"}),
                 400, "truncated")
    silent = audiofiles.make_audio(tmp_path, "wav", "silent.wav", seconds=10, kind="silence")
    assert_error(served.post("/v1/predict", data=silent.read_bytes()), 422, "silent")


def test_size_and_duration_limits(served, library, tmp_path):
    big = audiofiles.make_audio(tmp_path, "wav", "big.wav", seconds=30)  # 5.3 MB of PCM
    assert big.stat().st_size > UPLOAD_LIMIT_MB * 1024 * 1024
    assert_error(served.post("/v1/predict", data=big.read_bytes()), 413, "larger than the limit")
    # refused on the header alone: the server answers before any of the body is sent
    head = _raw(served.url, b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n")
    assert head.startswith("HTTP/1.1 413") and '"error"' in head
    long = audiofiles.make_audio(tmp_path, "mp3", "long.mp3", seconds=DURATION_LIMIT_S + 5)
    assert_error(served.post("/v1/predict", data=long.read_bytes()), 413, "at most 40 s")
    r = requests.post(served.url + "/v1/predict", data=b"x" * 10, headers={"Transfer-Encoding": "chunked"},
                      timeout=30)
    assert r.status_code in (400, 411)


def test_uploads_leave_nothing_behind(served, library):
    private = list(served.tmpdir.glob("tagger-serve-*"))
    assert len(private) == 1 and (private[0].stat().st_mode & 0o077) == 0  # only the server's user
    served.post("/v1/predict", data=library["mp3"].read_bytes())
    served.post("/v1/predict", data=b"not audio at all")
    assert list(private[0].iterdir()) == []


def test_overlapping_requests_get_their_own_answers(served, library, module_settings):
    names = ["blues", "classical", "metal", "pop", "mp3", "flac"]
    want = {n: _expected(library[n], module_settings) for n in names}
    got: dict[str, dict] = {}

    def send(name: str) -> None:
        got[name] = served.post("/v1/predict", data=library[name].read_bytes()).json()

    threads = [threading.Thread(target=send, args=(n,)) for n in names * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in names:
        assert got[n]["genre"] == want[n].genre, n
        assert got[n]["confidence"] == pytest.approx(want[n].confidence, abs=1e-5), n
    assert want["classical"].genre == "classical" and want["metal"].genre == "metal"  # the model tells them apart


# ---------------------------------------------------------------- paths under the library roots


def test_path_predictions_are_confined_to_the_roots(served, library, module_settings, tmp_path):
    root = Path(module_settings.library_roots[0])
    r = served.post("/v1/predict", params={"path": str(library["classical"])})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "path" and r.json()["genre"] == _expected(library["classical"], module_settings).genre

    outside = audiofiles.make_audio(tmp_path, "mp3", "outside.mp3", seconds=10)
    escape = root / "escape.mp3"
    escape.symlink_to(outside)
    inside_link = root / "inside-link.mp3"
    inside_link.symlink_to(library["mp3"])
    try:
        assert_error(served.post("/v1/predict", params={"path": str(outside)}), 403, "outside")
        assert_error(served.post("/v1/predict", params={"path": str(escape)}), 403, "outside")
        assert_error(served.post("/v1/predict", params={"path": f"{root}/songs/../../{outside.name}"}), 400, "..")
        assert_error(served.post("/v1/predict", params={"path": f"{root}/songs/../songs/song.mp3"}), 400, "..")
        assert_error(served.post("/v1/predict", params={"path": "songs/song.mp3"}), 400, "absolute")
        assert_error(served.post("/v1/predict", params={"path": f"{root}/nothing.mp3"}), 404)
        assert_error(served.post("/v1/predict", params={"path": "/etc/passwd"}), 403)
        assert served.post("/v1/predict", params={"path": str(inside_link)}).status_code == 200
        assert_error(served.post("/v1/predict", params={"path": str(library["mp3"])},
                                 data=library["mp3"].read_bytes()), 400, "not both")
    finally:
        escape.unlink()
        inside_link.unlink()


def test_confine_unit(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "rootless").mkdir()
    (root / "up").symlink_to(tmp_path)
    assert confine(str(root / "a"), (str(root),)) == str((root / "a").resolve())
    for bad, status in [(str(tmp_path / "rootless"), 403),  # a sibling sharing the root's name as a prefix
                        (str(root / "up" / "rootless"), 403), (str(root / "a" / ".." / "a"), 400),
                        ("a", 400), ("", 400)]:
        with pytest.raises(ApiError) as e:
            confine(bad, (str(root),))
        assert e.value.status == status, bad
    with pytest.raises(ApiError) as e:
        confine(str(root / "a"), ())
    assert e.value.status == 403


# ---------------------------------------------------------------- scans and the results database


def test_a_scan_over_http_does_not_follow_links_out_of_the_roots(served, module_settings, tmp_path):
    root = Path(module_settings.library_roots[0])
    outside = audiofiles.make_audio(tmp_path / "private", "mp3", "secret.mp3", seconds=10)
    folder = root / "links-only"
    folder.mkdir()
    (folder / "escape").symlink_to(outside.parent)
    (folder / "escape.mp3").symlink_to(outside)
    try:
        r = served.post("/v1/scans", json={"paths": [str(folder)], "dry_run": True})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (doc := served.get(f"/v1/scans/{r.json()['scan_id']}").json())["status"] == "running":
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        assert doc["status"] == "done" and doc["found"] == 0, doc
        paths = [f["path"] for f in served.get("/v1/files", params={"per_page": 200}).json()["items"]]
        assert not [p for p in paths if "secret" in p or "escape" in p]
    finally:
        shutil.rmtree(folder)


def test_scan_over_http_then_scans_and_files(served, library, module_settings):
    root = Path(module_settings.library_roots[0])
    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    audiofiles.text_as_audio(bad, "readme.mp3")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert_error(served.post("/v1/scans", json={"paths": ["/etc"]}), 403)
    assert_error(served.post("/v1/scans", json={"paths": [str(root / "absent")]}), 404)
    assert_error(served.post("/v1/scans", json={"paths": [str(root)], "verbose": True}), 400, "unknown")
    assert_error(served.post("/v1/scans", json={"paths": []}), 400)
    assert_error(served.post("/v1/scans", data="{", headers={"Content-Type": "application/json"}), 400, "JSON")
    assert_error(served.post("/v1/scans", data=json.dumps({"paths": [str(root)]})), 415)

    r = served.post("/v1/scans", json={"paths": [str(root)], "dry_run": True})
    assert r.status_code == 202, r.text
    scan_id = r.json()["scan_id"]
    assert r.headers["Location"] == f"/v1/scans/{scan_id}"
    deadline = time.monotonic() + 180
    while True:
        doc = served.get(f"/v1/scans/{scan_id}").json()
        if doc["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert doc["status"] == "done", doc
    audio = [n for n in library]
    assert doc["found"] == len(audio) + 1 and doc["dry_run"] == len(audio) and doc["failed"] == 1
    assert doc["failures"][0]["path"].endswith("readme.mp3")
    assert {p: p.read_bytes() for p in before} == before  # a dry run writes nothing

    listing = served.get("/v1/scans").json()
    assert listing["total"] >= 1 and listing["items"][0]["scan_id"] == scan_id
    assert "failures" not in listing["items"][0]

    files = served.get("/v1/files", params={"per_page": 200}).json()
    assert files["total"] == len(audio)
    by_path = {f["path"]: f for f in files["items"]}
    want = _expected(library["metal"], module_settings)
    assert by_path[str(library["metal"])]["genre"] == want.genre
    assert by_path[str(library["metal"])]["written_genre"] is None  # dry run: nothing written

    genre = want.genre.upper()  # case-insensitive
    only = served.get("/v1/files", params={"genre": genre}).json()
    assert only["total"] >= 1 and all(f["genre"] == want.genre for f in only["items"])
    sure = served.get("/v1/files", params={"min_confidence": 0.9}).json()
    assert all(f["confidence"] >= 0.9 for f in sure["items"])
    assert sure["total"] == sum(1 for f in files["items"] if f["confidence"] >= 0.9)
    q = served.get("/v1/files", params={"q": "SONGS/"}).json()
    assert {Path(f["path"]).name for f in q["items"]} == {"song.mp3", "song.flac", "tone.wav"}
    assert served.get("/v1/files", params={"q": "100%_"}).json()["total"] == 0  # LIKE wildcards are literal
    page2 = served.get("/v1/files", params={"per_page": 2, "page": 2}).json()
    assert page2["pages"] == -(-len(audio) // 2) and [f["path"] for f in page2["items"]] == \
        sorted(by_path)[2:4]
    assert_error(served.get("/v1/files", params={"min_confidence": "2"}), 400)
    assert_error(served.get("/v1/files", params={"per_page": "x"}), 400)
    assert_error(served.get(f"/v1/scans/{scan_id + 1000}"), 404)
    assert_error(served.get("/v1/scans/99999999999999999999"), 404)

    # the local workers the scan started are gone once it is done
    deadline = time.monotonic() + 30
    while _children(served.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _children(served.proc.pid) == []


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


# ---------------------------------------------------------------- protocol and errors


def test_unknown_routes_methods_and_garbage_are_json_errors(served):
    assert_error(served.get("/v1/nothing"), 404, "no such endpoint")
    r = requests.delete(served.url + "/v1/scans", timeout=10)
    assert_error(r, 405)
    assert r.headers["Allow"] == "GET, POST"
    reply = _raw(served.url, b"NOT A REQUEST\r\n\r\n")
    assert reply.startswith("HTTP/1.1 400") and reply.rstrip().endswith("}") and "<html" not in reply.lower()


def test_openapi_document_lists_every_route(served):
    doc = served.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/v1/health", "/v1/predict", "/v1/scans", "/v1/scans/{scan_id}", "/v1/files",
                                 "/openapi.json"}
    assert "security" not in doc  # no token configured: none documented


# ---------------------------------------------------------------- security


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.1", False), ("192.168.1.20", False),
    ("::ffff:10.0.0.1", False), ("no-such-host.invalid", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_non_loopback_bind_needs_a_token(settings):
    check_bind("127.0.0.1", "")
    check_bind("0.0.0.0", "secret")
    with pytest.raises(ConfigError, match="TAGGER_API_TOKEN"):
        check_bind("0.0.0.0", "")
    out = run_cli(settings, "serve", "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert out.returncode == 1 and "without a bearer token" in out.stderr and "Traceback" not in out.stderr


def test_token_matches():
    assert token_matches("Bearer s3cret", "s3cret") and token_matches("bearer  s3cret ", "s3cret")
    for header in (None, "", "s3cret", "Bearer", "Bearer s3cre", "Basic s3cret", "Bearer s3cret2"):
        assert not token_matches(header, "s3cret"), header


def test_a_configured_token_guards_everything_but_health(settings, tmp_path, audio_factory):
    token = "t0ken-" + os.urandom(8).hex()
    server = start_server(settings, tmp_path / "srv", TAGGER_API_TOKEN=token)
    try:
        assert server.get("/v1/health").status_code == 200
        song = audio_factory("mp3", seconds=10).read_bytes()
        for method, path, kw in [("GET", "/v1/scans", {}), ("GET", "/v1/files", {}), ("GET", "/openapi.json", {}),
                                 ("GET", "/v1/scans/1", {}), ("POST", "/v1/predict", {"data": song}),
                                 ("POST", "/v1/scans", {"json": {"paths": ["/"]}})]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                r = requests.request(method, server.url + path, headers=headers, timeout=30, **kw)
                assert_error(r, 401, "bearer token")
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        ok = {"Authorization": f"Bearer {token}"}
        assert requests.get(server.url + "/v1/scans", headers=ok, timeout=30).status_code == 200
        r = requests.post(server.url + "/v1/predict", data=song, headers=ok, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == TEST_MODEL
        doc = requests.get(server.url + "/openapi.json", headers=ok, timeout=30).json()
        assert doc["security"] == [{"bearer": []}]
        assert token not in server.log.read_text()
    finally:
        assert server.stop() == 0
    assert not list(server.tmpdir.glob("tagger-serve-*"))  # the private upload folder goes with the server
