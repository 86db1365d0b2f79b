"""CNI error objects (SPEC.md "Error" section, cni-reference §1.7).

Every failure leaves the plugin as one of these, printed on stdout as
``{"cniVersion", "code", "msg", "details"}`` with exit status 1.
"""
from __future__ import annotations

import errno
import os

from . import jsonlite  # not json: ~4.5 ms per frozen exec (re, enum)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

# SPEC.md "Well-known Error Codes"; 8 and 999 are libcni/skel additions.
UNKNOWN = 0
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999


class CNIError(Exception):
    """A failure that the runtime receives as a CNI error object.

    ``msg`` says what is wrong and ``details`` says how to fix it: podman prints
    them joined as ``msg: details``, so each must read well on its own.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self, cni_version: str) -> str:
        return jsonlite.dumps(self.to_dict(cni_version), indent=4)

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


def wrap(prefix: str, err: CNIError) -> CNIError:
    """Prefix the message of ``err`` keeping its code (for delegated failures)."""
    return CNIError(err.code, f"{prefix}: {err.msg}", err.details)


# -- errors from the kernel, in words (issue 20 §4) ---------------------------------------------

# A kernel without the feature a step needs: not our bug, and not a transient failure.
MISSING_FEATURE = (errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)
_NAMES = {errno.EOPNOTSUPP: "EOPNOTSUPP"}  # Python calls 95 ENOTSUP; Linux and Go say EOPNOTSUPP


def errno_of(exc: BaseException) -> int | None:
    """The errno an OSError or a pyroute2 NetlinkError carries (None for anything else)."""
    if isinstance(exc, OSError):
        return exc.errno
    code = getattr(exc, "code", None)
    if type(exc).__name__ == "NetlinkError" and isinstance(code, int):
        return code
    return None


def errno_text(exc_or_code: BaseException | int | None) -> str:
    """``network is unreachable (ENETUNREACH)``: the C library's words as Go prints them, plus the name."""
    code = exc_or_code if isinstance(exc_or_code, int) else (
        errno_of(exc_or_code) if exc_or_code is not None else None)
    if not code:
        return "unknown error"
    words = os.strerror(code)
    words = words[:1].lower() + words[1:]
    name = _NAMES.get(code) or errno.errorcode.get(code)
    return f"{words} ({name})" if name else words


def from_os_error(doing: str, exc: BaseException, fix: str, *, code: int = INTERNAL,
                  feature: str = "", option: str = "") -> CNIError:
    """``failed to <doing>: <errno text>`` with ``fix``; a missing kernel feature is named as one."""
    n = errno_of(exc)
    if n in MISSING_FEATURE:
        what = feature or "a feature this step needs"
        ask = f"{option} asks for {what}: " if option else ""
        return CNIError(UNSUPPORTED_FIELD, f"failed to {doing}: this kernel lacks {what}: {errno_text(n)}",
                        f"{ask}run on a kernel with {what} support"
                        + (f", or remove {option} from the network config" if option else ""))
    return CNIError(code, f"failed to {doing}: {errno_text(n)}", fix)


class kernel_step:  # noqa: N801 - used like a function: ``with kernel_step(...):``
    """Turn an OSError or NetlinkError raised inside into ``from_os_error(doing, ...)``.

    A class, not a contextlib generator: contextlib is one more import per exec.
    """

    def __init__(self, doing: str, fix: str, *, code: int = INTERNAL, feature: str = "",
                 option: str = "") -> None:
        self.doing, self.fix, self.code, self.feature, self.option = doing, fix, code, feature, option

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, CNIError) or not isinstance(exc, Exception) or errno_of(exc) is None:
            return None
        raise from_os_error(self.doing, exc, self.fix, code=self.code, feature=self.feature,
                            option=self.option) from None
