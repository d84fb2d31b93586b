"""Every kind of bad or odd input in one real scan: each gets a clear one-line outcome,
the scan goes on, and nothing else is touched (issue 6's list)."""
from __future__ import annotations

import json
import os
import shutil

import audiofiles
from services import run_cli

from tagger import tags


def _corrupt_middle(src, dest):
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4000] = os.urandom(4000)  # garbage frames in the middle of the stream
    dest.write_bytes(bytes(data))
    return dest


def test_a_library_of_bad_and_odd_files(settings, audio_factory, tmp_path):
    lib = tmp_path / "lib"
    f = audio_factory
    odd_name = os.fsencode(lib) + b"/odd names/latin1-\xe9 \"quoted\" 'single'\nnewline.flac"
    cases = {
        "rate8k.wav": f("wav", name="lib/rate8k.wav", seconds=8, sr=8000),
        "rate96k.flac": f("flac", name="lib/rate96k.flac", seconds=8, sr=96000),
        "mono.ogg": f("ogg", name="lib/mono.ogg", seconds=8, channels=1),
        "six.flac": f("flac", name="lib/six.flac", seconds=8, channels=6),
        "bigcover.mp3": f("mp3", name="lib/bigcover.mp3", seconds=8, tags={"title": ["Big"]},
                          cover=audiofiles.make_png(1448, 1448) + os.urandom(10_000_000)),
        "readonly.m4a": f("m4a", name="lib/readonly.m4a", seconds=8),
        "with space.opus": f("opus", name="lib/dir with space/with space.opus", seconds=8),
    }
    os.makedirs(os.path.dirname(odd_name), exist_ok=True)
    shutil.copyfile(f("flac", name="src/odd.flac", seconds=8), odd_name)
    bad = {
        "zero.mp3": audiofiles.zero_byte(lib, "zero.mp3"),
        "cut.flac": audiofiles.truncated(f("flac", name="src/cut.flac", seconds=20), lib / "cut.flac", 0.05),
        "image.mp3": lib / "image.mp3",
        "short.aiff": f("aiff", name="lib/short.aiff", seconds=1.0),
        "silence.wav": f("wav", name="lib/silence.wav", seconds=8, kind="silence"),
        "corrupt.mp3": _corrupt_middle(f("mp3", name="src/c.mp3", seconds=20), lib / "corrupt.mp3"),
    }
    bad["image.mp3"].write_bytes(audiofiles.make_png())
    cases["readonly.m4a"].chmod(0o444)
    (lib / "folder.flac").mkdir()  # a directory named like an audio file
    os.symlink(lib, lib / "loop")  # a symlink loop
    os.symlink(cases["mono.ogg"], lib / "again.ogg")  # a link to a file already scanned
    raw = {name: p.read_bytes() for name, p in {**cases, **bad}.items()}
    corrupt_audio = tags.audio_fingerprint(bad["corrupt.mp3"], "mp3")
    audio = {name: tags.audio_fingerprint(p, p.suffix[1:] if p.suffix != ".m4a" else "m4a")
             for name, p in cases.items()}

    out = run_cli(settings, "scan", str(lib), "--json", timeout=400)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    outcome = {os.path.basename(x["path"]): x["reason"] for x in summary["failures"]}

    # the readable odd ones are tagged; the read-only one is refused with a reason, untouched
    assert "read-only" in outcome.pop("readonly.m4a")
    assert cases["readonly.m4a"].read_bytes() == raw["readonly.m4a"]
    for name, p in cases.items():
        if name == "readonly.m4a":
            continue
        assert name not in outcome, (name, outcome.get(name))
        fmt = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".mp3": "mp3", ".opus": "opus"}[p.suffix]
        assert tags.read(p, fmt)["genre"], name
        assert tags.audio_fingerprint(p, fmt) == audio[name], name
    assert tags.read(os.fsdecode(odd_name), "flac")["genre"]

    expected = {"zero.mp3": "empty file", "cut.flac": "truncated", "image.mp3": "not MP3 audio",
                "short.aiff": "too short", "silence.wav": "silent"}
    for name, words in expected.items():
        assert words in outcome.get(name, ""), (name, outcome.get(name))
        assert "\n" not in outcome[name]
        assert bad[name].read_bytes() == raw[name]
    # garbage in the middle of an MP3: decoders resync; either it is tagged with its audio
    # intact, or it fails with a one-line reason — never a crash, never damage
    if "corrupt.mp3" in outcome:
        assert "\n" not in outcome["corrupt.mp3"]
        assert bad["corrupt.mp3"].read_bytes() == raw["corrupt.mp3"]
    else:
        assert tags.audio_fingerprint(bad["corrupt.mp3"], "mp3") == corrupt_audio
    assert summary["found"] == len(cases) + len(bad) + 1  # the link to a seen file and the folder are not files
