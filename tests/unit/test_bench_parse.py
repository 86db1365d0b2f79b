"""The benchmark's readers of plugin logs and -X importtime output (pure functions)."""
from __future__ import annotations

import json

from cni_flannel.tools.bench import breakdown, parse_importtime


def test_importtime_sums_self_times_and_ranks_top_level_imports() -> None:
    text = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        100 |   _io",
        "import time:       200 |        300 | encodings",
        "import time:      1500 |       4000 | cni_flannel.cni.skel",
        "import time:        50 |         50 | os",
        "not an import line",
    ])
    total, top = parse_importtime(text)
    assert round(total, 3) == 1.85
    assert top == [("cni_flannel.cni.skel", 4.0), ("encodings", 0.3), ("os", 0.05)]


def test_breakdown_counts_only_the_sequential_pods(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "calls.log"
    lines = [{"plugin": "flannel", "verb": "ADD", "containerID": "bench-ours-0", "durationMs": 10.0,
              "spans": {"schema": 0.5}},
             {"plugin": "flannel", "verb": "ADD", "containerID": "bench-ours-1", "durationMs": 12.0},
             {"plugin": "flannel", "verb": "ADD", "containerID": "c-node-c0", "durationMs": 900.0},
             {"plugin": "portmap", "verb": "DEL", "containerID": "bench-ours-0", "durationMs": 7.0}]
    log.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert breakdown(str(log)) == {"ADD flannel: in-plugin total": 11.0, "ADD flannel: schema": 0.5,
                                   "DEL portmap: in-plugin total": 7.0}
