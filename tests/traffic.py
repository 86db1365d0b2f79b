"""Test-side wrappers around cni_flannel.tools.traffic, taking harness namespaces."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness import Netns

from cni_flannel.tools import traffic


@contextmanager
def server(ns: Netns, port: int, reply: str, proto: str = "tcp") -> Iterator[None]:
    with traffic.server(ns.name, port, reply, proto):
        yield


def request(ns: Netns, host: str, port: int, proto: str = "tcp") -> str | None:
    return traffic.request(ns.name, host, port, proto)
