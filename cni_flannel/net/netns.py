"""Network namespaces: open by path, run code inside, always come back.

Kernel calls take an explicit namespace: ``socket_in(path)`` gives a netlink
socket bound to that namespace (a socket keeps the namespace it was created in),
so one socket per namespace serves a whole verb.
"""
from __future__ import annotations

import ctypes
import errno
import os

from ..cni.errors import INVALID_NETNS, CNIError, errno_text
from ..ctx import contextmanager

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Iterator
    from typing import Any

CLONE_NEWNET = 0x40000000
_libc: Any = None


def libc() -> Any:
    """The C library (setns before Python 3.12, prctl), loaded once per process."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, nstype)
        return
    if libc().setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetnsGone(CNIError):
    """The namespace path does not exist (any more): DEL treats this as done, ADD as an error."""

    def __init__(self, path: str) -> None:
        super().__init__(INVALID_NETNS, f"network namespace {path!r} (CNI_NETNS) does not exist",
                         "the container's netns must exist for ADD and CHECK")


def open_netns(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(path) from None
    except OSError as exc:
        raise CNIError(INVALID_NETNS, f"failed to open netns {path!r}: {errno_text(exc)}",
                       "CNI_NETNS must be a network namespace path such as /run/netns/<name>") from None
    return fd


@contextmanager
def entered(path: str) -> Iterator[int]:
    """Run the body inside the namespace at ``path``; yields the namespace fd."""
    target = open_netns(path)
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise CNIError(INVALID_NETNS, f"{path!r} is not a network namespace",
                               "CNI_NETNS must be a network namespace path") from None
            raise
        try:
            yield target
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)


def host_fd() -> int:
    return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
