"""Netlink sockets: our own small rtnetlink socket for the plugins, pyroute2 for flanneld.

The plugins call ``rtnl_here()`` / ``rtnl_in(path)`` (net/rtnl.py: standard library only,
no import cost). flanneld and doctor call ``socket_here()``: pyroute2's IPRoute, imported
lazily and without pyroute2's heavy package __init__ (``import pyroute2`` loads NDB, the CLI
and every protocol, ~250 ms; registering a bare package module first lets Python import
``pyroute2.iproute.linux`` directly, which is several times cheaper).
"""
from __future__ import annotations

import sys
import types

from ..cni.trace import span
from .netns import entered

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

_IPRoute: Any = None


def _iproute_class() -> Any:
    global _IPRoute
    if _IPRoute is None:
        with span("import_pyroute2"):
            _IPRoute = _import_iproute()
    return _IPRoute


def _import_iproute() -> Any:
    if "pyroute2" not in sys.modules:
        import importlib.util  # only here: the plugins' netlink (net/rtnl.py) never needs it

        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations:
            pkg = types.ModuleType("pyroute2")
            pkg.__path__ = list(spec.submodule_search_locations)
            pkg.__spec__ = spec
            pkg.__file__ = spec.origin
            sys.modules["pyroute2"] = pkg
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


def netlink_errors() -> tuple[type[BaseException], ...]:
    _iproute_class()
    from pyroute2.netlink.exceptions import NetlinkError

    return (NetlinkError,)


def kernel_errors() -> tuple[type[BaseException], ...]:
    """The netlink error classes of both socket kinds, without importing pyroute2 for it."""
    from .rtnl import NetlinkError

    mod = sys.modules.get("pyroute2.netlink.exceptions")
    return (NetlinkError, mod.NetlinkError) if mod is not None else (NetlinkError,)


def rtnl_here() -> Any:
    """Our own rtnetlink socket (net/rtnl.py) in the current namespace."""
    from .rtnl import Rtnl

    return Rtnl()


def rtnl_in(netns_path: str) -> Any:
    """Our own rtnetlink socket bound to the namespace at ``netns_path`` (NetnsGone if it is gone)."""
    from .rtnl import Rtnl

    with entered(netns_path):
        return Rtnl()


def socket_here() -> Any:
    """An IPRoute socket in the current namespace."""
    return _iproute_class()()


def socket_in(netns_path: str) -> Any:
    """An IPRoute socket bound to the namespace at ``netns_path``.

    The namespace is opened first: a DEL for a pod whose netns is gone raises
    NetnsGone before pyroute2 is ever imported.
    """
    with entered(netns_path):
        return _iproute_class()()
