"""sysctl as file reads and writes under /proc/sys, in the caller's current namespace."""
from __future__ import annotations


def _path(name: str) -> str:
    return "/proc/sys/" + name.strip("/").replace(".", "/") if "/" not in name else "/proc/sys/" + name.strip("/")


def read(name: str) -> str | None:
    try:
        with open(_path(name)) as f:
            return f.read().strip()
    except OSError:
        return None


def write(name: str, value: str) -> bool:
    """Write ``value``; returns False when the key does not exist or is read-only."""
    try:
        with open(_path(name), "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def ensure(name: str, value: str) -> bool:
    """Write only when different (the kernel logs some writes even when unchanged)."""
    if read(name) == value:
        return True
    return write(name, value)
