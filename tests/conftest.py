from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Netns, delete_netns, have_go_plugins, is_root, new_netns


@pytest.fixture
def make_netns() -> Iterator[Callable[[], Netns]]:
    """A factory of network namespaces, each deleted when the test ends, pass or fail."""
    if not is_root():
        pytest.skip("needs root for network namespaces")
    made: list[Netns] = []

    def make(prefix: str = "cnif") -> Netns:
        ns = new_netns(prefix)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        delete_netns(ns)


@pytest.fixture
def node(make_netns: Callable[[], Netns]) -> Netns:
    """A node namespace: plugins run inside it, never in the machine's root namespace."""
    return make_netns()


@pytest.fixture
def requires_go() -> None:
    if not have_go_plugins():
        pytest.skip("the Go reference plugins (apt containernetworking-plugins) are not installed")
