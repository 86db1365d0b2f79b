"""The VERSION verb, importing nothing heavier than ``jsonlite`` (and usually not even that).

Runtimes call VERSION very often (podman: for every plugin on almost every
command, always with ``{"cniVersion":"<v>"}``), so the common shape is read with
plain string operations; anything else goes through ``jsonlite``.
"""
from __future__ import annotations

CURRENT = "1.1.0"
SUPPORTED = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")  # == version.SUPPORTED


def requested_version(stdin: bytes) -> str:
    """The cniVersion asked for, when it is one we support; else the newest version."""
    text = stdin.strip()
    if not text:
        return CURRENT
    # Fast path: exactly {"cniVersion": "<v>"} with optional whitespace.
    if text.startswith(b"{") and text.endswith(b"}") and text.count(b'"') == 4:
        key, sep, value = text[1:-1].partition(b":")
        if sep and key.strip() == b'"cniVersion"':
            v = value.strip()
            if v.startswith(b'"') and v.endswith(b'"'):
                candidate = v[1:-1].decode("ascii", "replace")
                return candidate if candidate in SUPPORTED else CURRENT
    from .jsonlite import loads

    try:
        raw = loads(text)
    except (ValueError, RecursionError):
        return CURRENT
    if isinstance(raw, dict) and raw.get("cniVersion") in SUPPORTED:
        return str(raw["cniVersion"])
    return CURRENT


def response(stdin: bytes) -> str:
    versions = ",".join(f'"{v}"' for v in SUPPORTED)
    return f'{{"cniVersion":"{requested_version(stdin)}","supportedVersions":[{versions}]}}'
