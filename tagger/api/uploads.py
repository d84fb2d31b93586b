"""Request bodies to files: raw bodies and multipart/form-data, size-limited, streamed.

An upload never sits whole in memory: the body goes to a file in the
server's private temp folder in chunks, and a multipart body's ``file`` part
is found in that file through a memory map and copied out. A body that stops
arriving, or arrives too slowly, is answered 408 rather than waited for.

Errors about an upload are told to the client without the server's insides:
no temp path, no decoder's memory addresses or stream numbers.
"""
from __future__ import annotations

import mmap
import os
import re
import socket
import time
from email.message import Message
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

from tagger import formats
from tagger.api.security import ApiError
from tagger.errors import TaggerError

CHUNK = 1 << 20
#: the multipart field that carries the audio
FIELD = "file"
#: the slowest body accepted, bytes per second over the whole body (after a grace of one idle
#: timeout): every read has its own timeout, but a client sending a byte just within it each
#: time would otherwise hold its thread for as long as it likes
MIN_BODY_RATE = 16 * 1024


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """A header's main value and its parameters: ``'multipart/form-data; boundary=x'``."""
    msg = Message()
    msg["content-type"] = value
    params = msg.get_params() or []
    main = params[0][0].lower() if params else ""
    return main, {k.lower(): v for k, v in params[1:]}


def body_chunks(rfile: BinaryIO, sock: socket.socket, length: int, idle_s: float) -> Iterator[bytes]:
    """The request body's ``length`` bytes, as they arrive.

    Raises ApiError: 400 when the client closes early, 408 when nothing comes
    for ``idle_s`` or the whole body takes longer than ``idle_s`` plus
    ``length / MIN_BODY_RATE``. The socket's timeout is ``idle_s`` again after.
    """
    deadline = time.monotonic() + idle_s + length / MIN_BODY_RATE
    left = length
    try:
        while left > 0:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise ApiError(408, f"the body arrived too slowly: {length - left} of the {length} bytes "
                                    f"announced in {idle_s + length / MIN_BODY_RATE:.0f} s")
            sock.settimeout(min(idle_s, wait))
            try:
                chunk = rfile.read1(min(CHUNK, left))  # one recv: the deadline is checked between them
            except TimeoutError:
                if time.monotonic() >= deadline:
                    continue  # said as "too slowly" above
                raise ApiError(408, f"the body stopped arriving after {length - left} of the {length} bytes "
                                    f"announced (nothing for {idle_s:.0f} s)") from None
            if not chunk:
                raise ApiError(400, f"the body ended after {length - left} of the {length} bytes announced")
            left -= len(chunk)
            yield chunk
    finally:
        sock.settimeout(idle_s)


def receive(chunks: Iterable[bytes], dest: Path) -> None:
    """Write a body's chunks (``body_chunks``) into ``dest``."""
    with open(dest, "wb") as out:
        for chunk in chunks:
            out.write(chunk)


def extract_part(body: Path, boundary: str, dest: Path) -> Optional[str]:
    """Copy the ``file`` part of a multipart body into ``dest``; returns its filename, if any."""
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "multipart/form-data needs a boundary parameter (1-200 characters)")
    delim = b"--" + boundary.encode("latin-1", "replace")
    if body.stat().st_size == 0:
        raise ApiError(400, "empty multipart body")
    with open(body, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = m.find(delim)
        if pos < 0:
            raise ApiError(400, "the multipart body does not contain its boundary")
        while True:
            after = pos + len(delim)
            if m[after:after + 2] == b"--":
                break  # the closing delimiter
            line_end = m.find(b"\r\n", after)
            head_end = m.find(b"\r\n\r\n", after)
            if line_end < 0 or head_end < 0:
                raise ApiError(400, "the multipart body is truncated (part headers)")
            headers = m[line_end + 2:head_end].decode("utf-8", "replace")
            start = head_end + 4
            end = m.find(b"\r\n" + delim, start)
            if end < 0:
                raise ApiError(400, "the multipart body is truncated (no closing boundary)")
            name, filename = _disposition(headers)
            if name == FIELD:
                with open(dest, "wb") as out:
                    for i in range(start, end, CHUNK):
                        out.write(m[i:min(i + CHUNK, end)])
                return filename
            pos = end + 2
    raise ApiError(400, f'the multipart body has no "{FIELD}" part')


def _disposition(headers: str) -> tuple[Optional[str], Optional[str]]:
    for line in headers.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            msg = Message()
            msg["content-disposition"] = value.strip()
            return msg.get_param("name", header="content-disposition"), msg.get_filename()
    return None, None


def name_by_content(path: Path, filename: Optional[str]) -> Path:
    """Give an uploaded file the extension its content shows (the client's name is only a hint).

    Content that no sniffer recognises keeps the client's audio extension, so
    the format check can say what is wrong with it; without one it is refused.
    """
    fmt = formats.sniff(path)
    if fmt is not None:
        suffix = next(ext for ext, f in formats.EXTENSIONS.items() if f == fmt)
    else:
        hint = Path(filename or "").suffix.lower()
        if formats.expected_format("x" + hint) is None:
            raise ApiError(415, "the upload is not a recognised audio format")
        suffix = hint
    named = path.with_name(path.name + suffix)
    os.replace(path, named)
    return named


#: tagger.audio's words for a decoder's own complaint, "<prefix> (<the decoder's last line>)"
_DECODER_FAILED = re.compile(r"(?:not a readable audio file|decoding failed|corrupt audio: the decoder failed)"
                             r" \((?P<detail>.*)\)")
#: parts of a decoder's line that describe the server, not the upload
_INSIDES = [
    re.compile(r"\[[^\[\]]*@\s*0x[0-9a-f]+\]", re.I),  # "[mp3float @ 0x55f6…]": a decoder context's address
    re.compile(r"\[Errno -?\d+\]"),
    re.compile(r"\b(?:error while decoding |output file |input )?(?:stream )?#\d+(?::\d+)?:?", re.I),
    re.compile(r"""['"]?(?<![\w.])/[^\s'"]*['"]?:?"""),  # an absolute path (a temp file's)
]
#: decoder lines that say nothing about the upload once cleaned, and what to say instead
_DAMAGED = "the data is damaged or not audio"
_VAGUE = {"": _DAMAGED, "invalid argument": _DAMAGED, "does not contain any stream": "no audio stream",
          "end of file": "it ends before any audio"}
_MAX_REASON = 120


def scrub(message: str, private: Iterable[str] = ()) -> str:
    """``message`` without the ``private`` strings (the server's folders) and the decoder's insides."""
    for text in sorted({t for t in private if t}, key=len, reverse=True):
        message = message.replace(text, "")
    for pattern in _INSIDES:
        message = pattern.sub(" ", message)
    return " ".join(message.split()).strip(" :,;")


def public_error(exc: TaggerError, private: Iterable[str] = ()) -> TaggerError:
    """The same kind of error as ``exc``, its message fit for the client who uploaded the file.

    A decoder's complaint becomes ``cannot decode the uploaded audio: <reason>``
    (its last line, cleaned; one that says nothing once cleaned is replaced);
    other messages (too short, silent, truncated) are tagger's own and kept,
    cleaned all the same. ``private``: the server's temp folder and file names.
    """
    private = list(private)
    m = _DECODER_FAILED.fullmatch(exc.message)
    if m is None:
        return type(exc)(scrub(exc.message, private))
    reason = scrub(m.group("detail"), private)
    if reason.lower().startswith("last message repeated"):  # ffmpeg's, about the line it did not keep
        reason = ""
    reason = _VAGUE.get(reason.lower(), reason)
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 1].rstrip() + "…"
    if reason[1:2].islower():  # "Invalid data …" reads on after the colon; "CRC mismatch" keeps its case
        reason = reason[0].lower() + reason[1:]
    return type(exc)(f"cannot decode the uploaded audio: {reason}")
