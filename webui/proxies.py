"""The X-Forwarded-* headers, believed from the reverse proxies in front only.

With SENSORPIPE_WEB_PROXIES=N the client's address, scheme and host are taken from the last
N entries of those headers (werkzeug's ProxyFix). That is right for a request nginx passed
on, and wrong for one that reached the bridge directly: its sender wrote the headers
itself, and could take a new address for every wrong password. SENSORPIPE_WEB_PROXY_FROM
names the proxies (addresses, networks or host names, such as `nginx` in docker compose):
only a request from one of them has its headers believed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

# A host name is looked up again after this long (a container's address changes when it is
# made anew); a name that does not resolve (nginx not running) stands for no address.
RESOLVE_EVERY_S = 30.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyAddresses:
    """Addresses, networks and host names; `in` tells whether an address is one of them."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks: list[Network] = []
        self._names: list[str] = []
        for entry in entries:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._names.append(entry)
        self._resolved: set[str] = set()
        self._resolved_at = float("-inf")
        self._lock = threading.Lock()

    def _names_now(self) -> set[str]:
        with self._lock:
            if self._names and time.monotonic() - self._resolved_at > RESOLVE_EVERY_S:
                found = set()
                for name in self._names:
                    with contextlib.suppress(OSError):  # no address: the name stands for none
                        found |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
                self._resolved, self._resolved_at = found, time.monotonic()
            return self._resolved

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks) or address in self._names_now()


class ForwardedFrom:
    """WSGI middleware: ProxyFix for requests from `trusted` (from anyone if it is None)."""

    def __init__(self, app: Callable[..., Any], proxies: int, trusted: Sequence[str]) -> None:
        self._plain = app
        # Only the last `proxies` entries of each header count: a client can prepend its own.
        self._fixed = ProxyFix(app, x_for=proxies, x_proto=proxies, x_host=proxies)
        self._trusted = ProxyAddresses(trusted) if trusted else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self._trusted is None or environ.get("REMOTE_ADDR") in self._trusted:
            return self._fixed(environ, start_response)
        return self._plain(environ, start_response)
