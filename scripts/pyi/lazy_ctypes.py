"""Build step: install PyInstaller's ctypes hooks on ctypes' first import, not at every start.

Used by build.spec (and its test): ``swap(pyz, workpath)`` puts our ``pyimod03_ctypes.py``
(next to this file) in the bootstrap modules in place of PyInstaller's, and ships
PyInstaller's own module as ``_pyi_ctypes_hooks`` for ours to call.
"""
import os

from PyInstaller.building.utils import compile_pymodule

HERE = os.path.dirname(os.path.abspath(__file__))


def swap(pyz, workpath):
    deps = []
    for name, path, typecode in pyz.dependencies:
        if name == "pyimod03_ctypes":
            deps.append(("_pyi_ctypes_hooks", path, typecode))
            path = compile_pymodule(name, os.path.join(HERE, "pyimod03_ctypes.py"),
                                    os.path.join(workpath, "lazy-ctypes"), 0)
        deps.append((name, path, typecode))
    if len(deps) != len(pyz.dependencies) + 1:
        raise SystemExit("build.spec: PyInstaller no longer ships pyimod03_ctypes; review scripts/pyi/")
    pyz.dependencies = deps
