"""How a delegate is found and when it is ours (issue 20 §2); pure path logic in a temp dir."""
from __future__ import annotations

import os
import sys

import pytest

from cni_flannel import delegate
from cni_flannel.cni.errors import CNIError


def _exe(path, text="#!/bin/sh\n") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return str(path)


def test_lookup_is_first_regular_file_in_cni_path_order(tmp_path) -> None:
    """invoke.FindInPath: the first <dir>/<type> that is a regular file (a directory is skipped)."""
    (tmp_path / "a" / "bridge").mkdir(parents=True)
    second = _exe(tmp_path / "b" / "bridge")
    _exe(tmp_path / "c" / "bridge")
    assert delegate.find_in_path("bridge", [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")]) == second


def test_not_found_is_the_reference_message(tmp_path) -> None:
    with pytest.raises(CNIError) as err:
        delegate.find_in_path("bridge", ["/opt/cni/bin", str(tmp_path)])
    assert err.value.msg == f'failed to find plugin "bridge" in path [/opt/cni/bin {tmp_path}]'


def test_frozen_same_file_or_same_build_is_ours(tmp_path, monkeypatch) -> None:
    """A link to our executable, or another copy of this very build; not another build."""
    mine = _exe(tmp_path / "mine" / "cni-flannel")
    _exe(tmp_path / "mine" / "_internal" / "cni_flannel" / "BUILD_ID", "frozen-aaaa\n")
    os.symlink(mine, tmp_path / "bridge")
    twin = _exe(tmp_path / "twin" / "cni-flannel")
    _exe(tmp_path / "twin" / "_internal" / "cni_flannel" / "BUILD_ID", "frozen-aaaa\n")
    other = _exe(tmp_path / "other" / "cni-flannel")
    _exe(tmp_path / "other" / "_internal" / "cni_flannel" / "BUILD_ID", "frozen-bbbb\n")
    wrapper = _exe(tmp_path / "wrap" / "bridge", f"#!/bin/sh\nexec {mine} \"$@\"\n")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", mine)
    monkeypatch.setenv("CNI_FLANNEL_BUILD_ID", "frozen-aaaa")
    assert delegate.is_ours(str(tmp_path / "bridge"))
    assert delegate.is_ours(twin)
    assert not delegate.is_ours(other)
    assert not delegate.is_ours(wrapper)


def test_from_source_the_launcher_we_run_as_is_ours(tmp_path, monkeypatch) -> None:
    launcher = _exe(tmp_path / "bin" / "cni-flannel")
    os.symlink("cni-flannel", tmp_path / "bin" / "flannel")
    os.symlink("cni-flannel", tmp_path / "bin" / "bridge")
    copy = _exe(tmp_path / "elsewhere" / "bridge")
    monkeypatch.delattr(sys, "frozen", raising=False)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "flannel")])
    assert delegate.is_ours(str(tmp_path / "bin" / "bridge")) and delegate.is_ours(launcher)
    assert not delegate.is_ours(copy)
    monkeypatch.setattr(sys, "argv", [os.path.join(os.path.dirname(delegate.__file__), "__main__.py")])
    assert not delegate.is_ours(str(tmp_path / "bin" / "bridge"))  # python -m: everything is exec'd
