"""Whether a dataset's download host can be reached by name, asked once and briefly before torchvision
tries: offline, torchvision's attempts each wait out the resolver and its retries (some 40 s for CIFAR)
before the one-line "data not found" message, which then also names NLBENCH_OFFLINE=1.

Behind a proxy nothing is asked: the proxy resolves the host. The question is the resolver's (`getaddrinfo`), in a daemon thread given `RESOLVE_TIMEOUT_S`: a resolver
with no network to ask may block far longer, and the process must not wait for it, now or at exit.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from typing import Any, Iterable
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_S = 3.0
OFFLINE_HINT = "set NLBENCH_OFFLINE=1 to skip downloads when offline"
_answers: dict[str, bool] = {}  # host -> resolvable, for this process (train and test splits ask twice)


def download_hosts(reader: Any) -> list[str]:
    """The hosts a torchvision dataset class downloads from (`url`, or each of its `mirrors`) that this
    machine must resolve itself: a host reached through a proxy is the proxy's to resolve, so none."""
    urls: Iterable[str] = [reader.url] if isinstance(getattr(reader, "url", None), str) else getattr(reader, "mirrors", [])
    proxies = urllib.request.getproxies()
    hosts = []
    for url in urls:
        parts = urlsplit(url)
        if not parts.hostname:
            continue
        if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname):
            return []
        hosts.append(parts.hostname)
    return list(dict.fromkeys(hosts))


def resolvable(host: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> bool:
    """Whether `host` resolves within `timeout_s` seconds (the answer is remembered)."""
    if host not in _answers:
        found: list[bool] = []

        def ask() -> None:
            try:
                found.append(bool(socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)))
            except (OSError, UnicodeError):
                found.append(False)

        thread = threading.Thread(target=ask, name="nlbench-resolve", daemon=True)
        thread.start()
        thread.join(timeout_s)
        _answers[host] = bool(found and found[0])
    return _answers[host]


def unreachable_note(reader: Any) -> str | None:
    """The sentence for the "data not found" message when no download host resolves, else None."""
    hosts = download_hosts(reader)
    if not hosts or any(resolvable(host) for host in hosts):
        return None
    return (f" No download was attempted: {', '.join(hosts)} cannot be resolved (no network?); "
            f"{OFFLINE_HINT}.")
