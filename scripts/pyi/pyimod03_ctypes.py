"""Stands in for PyInstaller's ``pyimod03_ctypes`` in our bundle (build.spec swaps it in).

PyInstaller's bootstrap imports ``ctypes`` on every start to patch ``ctypes.CDLL`` and
``ctypes.PyDLL`` so that they look in ``sys._MEIPASS`` first. That import costs ~1.5 ms per
exec, and VERSION, portmap and the warm worker's client never use ctypes. Here the same
hooks (PyInstaller's own ``install()``, shipped as ``_pyi_ctypes_hooks``) run when ctypes is
first imported, so whoever uses ctypes sees exactly the patched classes.

Runs during the bootstrap: builtin modules only.
"""
import sys


class _HookedLoader:
    """Delegates to ctypes' real loader, then installs PyInstaller's hooks on the new module."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        import _pyi_ctypes_hooks

        _pyi_ctypes_hooks.install()  # its ``import ctypes`` finds the module just executed

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _CtypesWatch:
    """A meta path finder for ``ctypes`` alone; it leaves sys.meta_path on first use."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "ctypes":
            return None
        sys.meta_path.remove(cls)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                spec.loader = _HookedLoader(spec.loader)
                return spec
        return None


def install():
    """Called by PyInstaller's bootstrap script in place of the eager install."""
    sys.meta_path.insert(0, _CtypesWatch)
