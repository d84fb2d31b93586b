"""Request bodies to files: raw bodies and multipart/form-data, size-limited, streamed.

An upload never sits whole in memory: the body goes to a file in the
server's private temp folder in chunks, and a multipart body's ``file`` part
is found in that file through a memory map and copied out.
"""
from __future__ import annotations

import mmap
import os
from email.message import Message
from pathlib import Path
from typing import BinaryIO, Optional

from tagger import formats
from tagger.api.security import ApiError

CHUNK = 1 << 20
#: the multipart field that carries the audio
FIELD = "file"


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """A header's main value and its parameters: ``'multipart/form-data; boundary=x'``."""
    msg = Message()
    msg["content-type"] = value
    params = msg.get_params() or []
    main = params[0][0].lower() if params else ""
    return main, {k.lower(): v for k, v in params[1:]}


def receive(rfile: BinaryIO, length: int, dest: Path) -> None:
    """Copy exactly ``length`` bytes of the request body into ``dest``."""
    left = length
    with open(dest, "wb") as out:
        while left > 0:
            chunk = rfile.read(min(CHUNK, left))
            if not chunk:
                raise ApiError(400, f"the body ended after {length - left} of the {length} bytes announced")
            out.write(chunk)
            left -= len(chunk)


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
