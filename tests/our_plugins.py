"""Our plugins run as a runtime runs them: exec'd from a CNI_PATH directory of our own links.

A delegate (flannel's bridge, bridge's host-local) runs in-process only when the file
CNI_PATH holds for it is our own program (issue 20 §2). Tests of our chains therefore
run the plugin from that directory with CNI_PATH pointing at it: the frozen set when
CNI_FLANNEL_BIN is set, else a launcher dir (harness.plugin_dir) made once per run.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

from harness import Outcome, our_bin_dir, plugin_dir, run_plugin

_DIR: list[str] = []


def our_path() -> str:
    if our_bin_dir():
        return our_bin_dir()  # type: ignore[return-value]
    if not _DIR:
        tmp = tempfile.mkdtemp(prefix="cnif-bin-")
        atexit.register(shutil.rmtree, tmp, True)
        _DIR.append(plugin_dir(tmp))
    return _DIR[0]


def ours(plugin: str, verb: str, conf: Any, **kw: Any) -> Outcome:
    """harness.ours, but exec'd from our CNI_PATH dir, which is also the default CNI_PATH."""
    kw.setdefault("cni_path", our_path())
    return run_plugin([os.path.join(our_path(), plugin)], verb, conf, **kw)
