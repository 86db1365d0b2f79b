"""Spec versions and verb gating (SPEC.md "Version considerations", cni-reference §1.1-1.2)."""
from __future__ import annotations

from .errors import INCOMPATIBLE_VERSION, CNIError

CURRENT = "1.1.0"
# version.All in libcni: every version a reference plugin advertises.
SUPPORTED: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def parse(version: str) -> tuple[int, int, int]:
    """MAJOR.MINOR.PATCH, ASCII digits only (no `re`: ~3 ms per frozen exec)."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise CNIError(INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}",
                       f"use one of {', '.join(SUPPORTED)}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def require_supported(version: str) -> None:
    if version not in SUPPORTED:
        raise CNIError(INCOMPATIBLE_VERSION,
                       f"incompatible CNI version {version!r} in field cniVersion",
                       f"this plugin supports {', '.join(SUPPORTED)}")


# skel: CHECK needs >=0.4.0, GC and STATUS need >=1.1.0 (code 1).
VERB_MINIMUM = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def gate_verb(verb: str, version: str) -> None:
    minimum = VERB_MINIMUM.get(verb)
    if minimum and not at_least(version, minimum):
        raise CNIError(INCOMPATIBLE_VERSION,
                       f"config version {version} does not allow {verb}",
                       f"{verb} needs cniVersion {minimum} or later")


def result_family(version: str) -> str:
    """The result type family of a version: '020', '040' or '100' (libcni types packages)."""
    v = parse(version)
    if v < (0, 3, 0):
        return "020"
    if v < (1, 0, 0):
        return "040"
    return "100"
