"""Who may call the API and which files a caller may name.

The rules: the server binds to loopback by default; bound anywhere else it
refuses to start without a bearer token. A configured token is required on
every route but health, wherever the server listens. Paths named by callers
must resolve (symlinks followed) inside a configured library root.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from pathlib import PurePosixPath

from tagger.errors import ConfigError


class ApiError(Exception):
    """An error answered to the client as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())
        self.headers = headers or {}


def _is_loopback_ip(text: str) -> bool:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    return ip.is_loopback


def is_loopback(host: str) -> bool:
    """True when binding to ``host`` reaches this machine only.

    An IP literal decides by itself (all of 127.0.0.0/8 and ``::1`` are
    loopback; ``0.0.0.0``, ``::`` and the empty host bind every interface).
    A name counts only when every address it resolves to is loopback.
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return False
    try:
        return _is_loopback_ip(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(_is_loopback_ip(a) for a in addresses)


def check_bind(host: str, token: str) -> None:
    """Refuse a non-loopback bind without a token (raises ConfigError)."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"refusing to listen on {host or 'every interface'} (not a loopback address) "
                          "without a bearer token: set TAGGER_API_TOKEN (or api_token in the config file)")


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries the bearer ``token`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8"))


def confine(path: str, roots: tuple[str, ...]) -> str:
    """The real path of ``path`` when it lies inside one of ``roots``; raises ApiError.

    ``..`` components are refused outright rather than resolved, and the
    check is made on the fully resolved path, so a symlink inside a root that
    points outside it is refused too. Confinement is checked before existence,
    so a caller learns nothing about files outside the roots.
    """
    if not roots:
        raise ApiError(403, "no library roots are configured (library_roots / TAGGER_LIBRARY_ROOTS), "
                            "so no path may be named")
    if not path or "\x00" in path:
        raise ApiError(400, "path must be a non-empty absolute path")
    if not os.path.isabs(path):
        raise ApiError(400, "path must be absolute")
    if ".." in PurePosixPath(path).parts:
        raise ApiError(400, "path must not contain '..'")
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return real
    raise ApiError(403, "path is outside the configured library roots")
