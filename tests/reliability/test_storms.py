"""Load: 100 concurrent ADDs, 100 concurrent DELs, and a mixed storm, on one node."""
from __future__ import annotations

import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import figures
from harness import delete_netns, new_netns
from kernel import ping

N = 100


def test_100_concurrent_adds_then_100_concurrent_dels(flannel_node) -> None:
    node = flannel_node
    pods = []
    try:
        for _ in range(N):
            pods.append(new_netns("cnifs"))
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=N) as pool:
            results = list(pool.map(lambda ip: node.add_pod(f"storm{ip[0]}", ip[1].path,
                                                            20000 + ip[0] if ip[0] % 10 == 0 else None),
                                    enumerate(pods)))
        add_s = time.monotonic() - started
        ips = [r["ips"][0]["address"].split("/")[0] for r in results]
        assert len(set(ips)) == N
        unreachable = [p.name for p in pods if not ping(p, "10.42.1.1")]
        assert unreachable == []
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=N) as pool:
            list(pool.map(lambda ip: node.del_pod(f"storm{ip[0]}", ip[1].path,
                                                  20000 + ip[0] if ip[0] % 10 == 0 else None), enumerate(pods)))
        del_s = time.monotonic() - started
        left = node.residue()
        figures(test="storm", concurrency=N, unique_ips=len(set(ips)), add_wall_s=round(add_s, 1),
                del_wall_s=round(del_s, 1), residue=len(left))
        assert left == []
    finally:
        for p in pods:
            delete_netns(p)


def test_mixed_storm_of_adds_and_dels(flannel_node) -> None:
    node = flannel_node
    rng = random.Random(7)
    live: dict[str, object] = {}
    ops = 0
    pods = {f"mix{i}": new_netns("cnifm") for i in range(40)}
    try:
        def step(cid: str) -> None:
            ns = pods[cid]
            if cid in live:
                node.del_pod(cid, ns.path)
                live.pop(cid)
            else:
                live[cid] = node.add_pod(cid, ns.path)

        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            batch = rng.sample(sorted(pods), 8)  # distinct pods: no two ops on one container at once
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(step, batch))
            ops += len(batch)
            addrs = [r["ips"][0]["address"] for r in live.values()]  # type: ignore[index]
            assert len(addrs) == len(set(addrs))
        for cid in list(live):
            node.del_pod(cid, pods[cid].path)
        left = node.residue()
        figures(test="mixed_storm", operations=ops, pods=len(pods), residue=len(left))
        assert left == []
    finally:
        for ns in pods.values():
            delete_netns(ns)
        subprocess.run(["true"])
