"""Blocks every connection and name lookup that does not stay on loopback.

``block_non_loopback(monkeypatch)`` patches ``socket.socket.connect`` and
``socket.getaddrinfo`` and returns the list of attempts it refused. It also
removes the variables that would hide a credential lookup (NO_GCE_CHECK,
GOOGLE_APPLICATION_CREDENTIALS) or send Pub/Sub clients to an emulator, so a
test observes what a production machine would attempt.
"""

from __future__ import annotations

import socket

_LOOPBACK_NAMES = ("localhost", "::1")
_HIDING_VARIABLES = ("NO_GCE_CHECK", "GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST")


def is_loopback(host: object) -> bool:
    """True for 127.x.x.x, ``::1`` and ``localhost``."""
    return isinstance(host, str) and (host.startswith("127.") or host in _LOOPBACK_NAMES)


def block_non_loopback(monkeypatch, *, keep_environment: bool = False) -> list:
    """Refuse non-loopback connect() and getaddrinfo() for the test; return the refused attempts."""
    attempts: list = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(host):
            attempts.append(("connect", address))
            raise OSError(f"test forbids network access to {address!r}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        # Even an IP literal is refused: google-auth resolves the metadata address this way.
        if isinstance(host, (str, bytes)) and not is_loopback(host if isinstance(host, str) else host.decode()):
            attempts.append(("getaddrinfo", host))
            raise socket.gaierror(f"test forbids resolving {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    if not keep_environment:
        for name in _HIDING_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    return attempts
