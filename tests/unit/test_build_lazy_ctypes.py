"""build.spec's lazy ctypes hooks (scripts/pyi): a frozen app starts without importing ctypes, and
ctypes, once imported, has PyInstaller's patched loaders (CDLL/PyDLL look in sys._MEIPASS first)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("PyInstaller")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP = """
import sys
print("ctypes at start:", "ctypes" in sys.modules)
import ctypes
print(ctypes.CDLL.__name__, ctypes.cdll._dlltype.__name__, ctypes.PyDLL.__name__)
print("getpid:", ctypes.CDLL(None).getpid() > 0)
try:
    ctypes.CDLL("libno-such-library.so.0")
except OSError as exc:
    print(type(exc).__name__)
"""

SPEC = """
import os, sys
sys.path.insert(0, {pyi!r})
import lazy_ctypes
from PyInstaller.config import CONF
a = Analysis(["app.py"])
pyz = PYZ(a.pure)
lazy_ctypes.swap(pyz, CONF["workpath"])
exe = EXE(pyz, a.scripts, [], exclude_binaries=True, name="app")
coll = COLLECT(exe, a.binaries, a.datas, name="app")
"""


def test_frozen_app_imports_ctypes_lazily_with_pyinstaller_hooks(tmp_path: object) -> None:
    work = str(tmp_path)
    with open(os.path.join(work, "app.py"), "w") as f:
        f.write(textwrap.dedent(APP))
    with open(os.path.join(work, "app.spec"), "w") as f:
        f.write(SPEC.format(pyi=os.path.join(REPO, "scripts", "pyi")))
    subprocess.run([sys.executable, "-m", "PyInstaller", "-y", "--log-level", "WARN", "app.spec"], cwd=work,
                   check=True, capture_output=True)
    out = subprocess.run([os.path.join(work, "dist", "app", "app")], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "ctypes at start: False",
        "PyInstallerCDLL PyInstallerCDLL PyInstallerPyDLL",
        "getpid: True",
        "PyInstallerImportError",  # PyInstaller's own wording of a missing library
    ]
