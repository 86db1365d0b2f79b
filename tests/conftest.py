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
def lab(tmp_path):
    """flanneld_lab.Lab: node and service namespaces on one underlay; all removed at the end, pass or fail."""
    if not is_root():
        pytest.skip("needs root for network namespaces")
    from flanneld_lab import Lab

    the_lab = Lab(str(tmp_path))
    yield the_lab
    the_lab.destroy()


@pytest.fixture
def node(make_netns: Callable[[], Netns]) -> Netns:
    """A node namespace: plugins run inside it, never in the machine's root namespace."""
    return make_netns()


@pytest.fixture
def requires_go() -> None:
    if not have_go_plugins():
        pytest.skip("the Go reference plugins (apt containernetworking-plugins) are not installed")


@pytest.fixture(scope="session", autouse=True)
def expect_worker(tmp_path_factory):
    """With CNI_FLANNEL_EXPECT_WORKER=1 (scripts/test.sh's worker pass), prove the worker served calls."""
    if os.environ.get("CNI_FLANNEL_EXPECT_WORKER") != "1":
        yield
        return
    import json

    log = tmp_path_factory.mktemp("worker-log") / "calls.log"
    os.environ["CNI_FLANNEL_LOG"] = str(log)
    yield
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    served = sum(1 for x in lines if x.get("servedBy") == "worker")
    print(f"\nworker pass: {served} of {len(lines)} logged plugin calls were served by the warm worker")
    assert served > 0, "the worker pass ran no call through the worker"
