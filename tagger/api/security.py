"""Who may call the API and which files a caller may name.

The rules: the server binds to loopback by default; bound anywhere else it
refuses to start without a bearer token. A configured token is required on
every route but health, wherever the server listens. Paths named by callers
must resolve (symlinks followed) inside a configured library root. A request
must name this server in its Host header (loopback names, the address it was
reached at, the bind host, or ``allowed_hosts``): a browser page whose own name
an attacker re-points at 127.0.0.1 (DNS rebinding) sends that name, and is refused.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import re
import socket
from pathlib import PurePosixPath
from typing import Collection, Optional

from tagger.errors import ConfigError


class ApiError(Exception):
    """An error answered to the client as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())
        self.headers = headers or {}


def _ip(text: str) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """An IP literal (a zone ``%eth0`` ignored, ``::ffff:a.b.c.d`` as a.b.c.d); None for anything else."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    return ip


def _is_loopback_ip(text: str) -> bool:
    ip = _ip(text)
    if ip is None:
        raise ValueError(text)
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


#: Host names that are this machine whatever DNS says (IP literals are checked as addresses)
LOOPBACK_NAMES = frozenset({"localhost"})
#: bind addresses that mean "every interface": no client names the server by them
_WILDCARDS = frozenset({"0.0.0.0", "::"})
_HOST = re.compile(r"\[(?P<v6>[0-9a-z:.%]+)\](?::[0-9]*)?|(?P<name>[a-z0-9_.-]+)(?::[0-9]*)?")


def host_name(header: str) -> Optional[str]:
    """The host part of a Host header value, or None when it is malformed.

    Lower case, without port or brackets, a trailing dot dropped, IP literals
    in canonical form: ``"[::1]:8750"`` and the bracketless ``"::1"`` (not
    valid, but sent) both give ``"::1"``.
    """
    text = header.strip().lower()
    if text.count(":") > 1 and not text.startswith("["):
        name = text
    else:
        m = _HOST.fullmatch(text)
        if not m:
            return None
        name = m.group("v6") or m.group("name").rstrip(".")
    ip = _ip(name)
    if ip is not None:
        return str(ip)
    return name if name and ":" not in name else None


def served_names(bind_host: str, allowed_hosts: Collection[str]) -> frozenset[str]:
    """The Host names a server bound to ``bind_host`` answers for, besides loopback ones.

    Raises ConfigError for an ``allowed_hosts`` entry that is not a host name
    (``http://tagger.lan`` or ``*.lan`` would otherwise silently match nothing).
    """
    names = set()
    for entry in allowed_hosts:
        name = host_name(entry)
        if name is None:
            raise ConfigError(f"allowed_hosts: {entry!r} is not a host name (name or address, optional :port)")
        names.add(name)
    names.add(host_name(bind_host))
    return frozenset(n for n in names if n and n not in _WILDCARDS)


def host_allowed(header: str, served: Collection[str], local_address: str) -> bool:
    """Whether a request's Host header names this server.

    Names are never resolved: resolving the attacker's name is what DNS
    rebinding exploits. Accepted are ``localhost``, any loopback address,
    the address the connection arrived at (an IP literal cannot be
    rebound), and the ``served`` names (the bind host and ``allowed_hosts``).
    """
    name = host_name(header)
    if name is None:
        return False
    if name in LOOPBACK_NAMES or name in served:
        return True
    ip = _ip(name)
    return ip is not None and (ip.is_loopback or ip == _ip(local_address))


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
