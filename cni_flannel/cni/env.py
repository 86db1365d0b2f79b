"""The CNI_* environment (SPEC.md "Parameters", skel's required-ness table, cni-reference §1.3)."""
from __future__ import annotations

import os

from ..records import field, record
from .errors import INVALID_ENV, INVALID_NETNS, UNKNOWN_CONTAINER, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Mapping

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")

# libcni pkg/utils: ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$ guards container ids and network names. Checked by
# hand: `re` costs ~3 ms per frozen exec, and Python's `$` would also accept a trailing newline (Go's does not).
_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")


def is_valid_id(value: str) -> bool:
    """libcni's ID pattern, matched against the whole string as Go does."""
    return bool(value) and value[0] in _ID_FIRST and _ID_REST.issuperset(value)

# skel's table, except CNI_PATH, which the spec makes optional for ADD/DEL/CHECK.
REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}


@record
class CmdArgs:
    """What the runtime told us, validated; the Python twin of skel.CmdArgs."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: list[str] = field(default_factory=list)
    stdin: bytes = b""

    def cni_args(self, known: tuple[str, ...] = ()) -> dict[str, str]:
        """Parse CNI_ARGS like types.LoadArgs: unknown keys fail unless IgnoreUnknown."""
        return parse_cni_args(self.args, known)


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise CNIError(UNKNOWN_CONTAINER, "missing containerID",
                       "set CNI_CONTAINERID to the container's id")
    if not is_valid_id(container_id):
        raise CNIError(INVALID_ENV, f"invalid characters in containerID {container_id[:80]!r}",
                       "CNI_CONTAINERID must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")


def validate_ifname(ifname: str) -> None:
    problem = ""
    if not ifname:
        problem = "is empty"
    elif len(ifname) > 15:
        problem = "is longer than 15 characters"
    elif ifname in (".", ".."):
        problem = "is '.' or '..'"
    elif any(c == "/" or c == ":" or c.isspace() or c == "\0" for c in ifname):
        problem = "contains '/', ':', a NUL or whitespace"
    if problem:
        raise CNIError(INVALID_ENV, f"interface name {ifname[:40]!r} in CNI_IFNAME {problem}",
                       "use a Linux interface name such as eth0")


def parse_cni_args(raw: str, known: tuple[str, ...] = ()) -> dict[str, str]:
    pairs: dict[str, str] = {}
    if not raw:
        return pairs
    for item in raw.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENV, f"invalid CNI_ARGS pair {item[:80]!r}",
                           "CNI_ARGS must be K=V pairs separated by ';'")
        pairs[key] = value
    ignore = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    if known and not ignore:
        unknown = [k for k in pairs if k not in known and k != "IgnoreUnknown"]
        if unknown:
            raise CNIError(INVALID_ENV, f"unknown CNI_ARGS keys {', '.join(unknown)}",
                           f"this plugin knows {', '.join(known)}; add IgnoreUnknown=1 to pass others")
    return pairs


def _same_netns_as_self(netns: str) -> bool:
    try:
        a, b = os.stat(netns), os.stat("/proc/self/ns/net")
    except OSError:
        return False  # skel tolerates a path it cannot open
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def from_environ(environ: Mapping[str, str], stdin: bytes = b"") -> CmdArgs:
    """Build CmdArgs from the environment; the command itself is checked by the caller."""
    command = environ.get("CNI_COMMAND", "")
    if command not in VERBS:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND: {command[:40]}",
                       f"CNI_COMMAND must be one of {', '.join(VERBS)}")
    for var in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"):
        if "\0" in environ.get(var, ""):
            raise CNIError(INVALID_ENV, f"{var} contains a NUL byte", f"pass a plain string in {var}")
    missing = [v for v in REQUIRED[command] if not environ.get(v)]
    # An empty CNI_CONTAINERID is code 3, as skel reports it, when it is the only problem.
    if missing == ["CNI_CONTAINERID"]:
        validate_container_id("")
    if missing:
        raise CNIError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing",
                       f"the runtime must set them for {command}")
    args = CmdArgs(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=environ.get("CNI_ARGS", ""),
        path=[p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p],
        stdin=stdin,
    )
    if command in ("ADD", "DEL", "CHECK"):
        validate_container_id(args.container_id)
        validate_ifname(args.ifname)
    if args.netns and command in ("ADD", "CHECK") and _same_netns_as_self(args.netns):
        if environ.get("CNI_NETNS_OVERRIDE", "").upper() not in ("1", "TRUE"):
            raise CNIError(INVALID_NETNS, f"CNI_NETNS {args.netns} is the plugin's own network namespace",
                           "pass the container's namespace, or set CNI_NETNS_OVERRIDE=1")
    return args
