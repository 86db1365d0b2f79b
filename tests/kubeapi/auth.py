"""Bearer-token authentication and a tiny RBAC: each user has a set of (verb, resource) rules.

Resources are the names RBAC uses: ``nodes``, ``nodes/status``, ``pods``; ``"*"`` matches any verb or
resource. The refusal message is the apiserver's (``responsewriters.Forbidden`` + ``NewForbidden``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

FLANNEL_USER = "system:serviceaccount:kube-flannel:flannel"
ADMIN_USER = "admin"

Rules = frozenset[tuple[str, str]]

# The ClusterRole of install-cni/kube-flannel.yml (reference §6.6): what flanneld at H needs.
FLANNEL_RULES: Rules = frozenset({
    ("get", "pods"),
    ("get", "nodes"), ("list", "nodes"), ("watch", "nodes"),
    ("patch", "nodes/status"),
})
# The seed's 2019 ClusterRole: no `nodes get` (reference §6.6).
SEED_RULES: Rules = FLANNEL_RULES - {("get", "nodes")}
ADMIN_RULES: Rules = frozenset({("*", "*")})

DEFAULT_TOKENS = {"flannel-token": FLANNEL_USER, "admin-token": ADMIN_USER}


def default_rbac() -> dict[str, Rules]:
    return {FLANNEL_USER: FLANNEL_RULES, ADMIN_USER: ADMIN_RULES}


def authenticate(header: str | None, tokens: Mapping[str, str]) -> str | None:
    """The user of an ``Authorization: Bearer <token>`` header, or None (→ 401)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return tokens.get(token.strip())


def allowed(rules: Iterable[tuple[str, str]], verb: str, resource: str) -> bool:
    return any(v in ("*", verb) and r in ("*", resource) for v, r in rules)


def forbidden_message(user: str, verb: str, resource: str, subresource: str = "", name: str = "",
                      namespace: str = "") -> str:
    """E.g. ``nodes "n1" is forbidden: User "u" cannot patch resource "nodes/status" in API group ""
    at the cluster scope`` (one line)."""
    full = f"{resource}/{subresource}" if subresource else resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    subject = f'{resource} "{name}"' if name else resource
    return f'{subject} is forbidden: User "{user}" cannot {verb} resource "{full}" in API group "" {scope}'
