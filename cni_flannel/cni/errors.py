"""CNI error objects (SPEC.md "Error" section, cni-reference §1.7).

Every failure leaves the plugin as one of these, printed on stdout as
``{"cniVersion", "code", "msg", "details"}`` with exit status 1.
"""
from __future__ import annotations

import json
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
        return json.dumps(self.to_dict(cni_version), indent=4)

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


def wrap(prefix: str, err: CNIError) -> CNIError:
    """Prefix the message of ``err`` keeping its code (for delegated failures)."""
    return CNIError(err.code, f"{prefix}: {err.msg}", err.details)
