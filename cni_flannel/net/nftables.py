"""nftables through the ``nft`` CLI: scripts in with ``-f -``, JSON out with ``-j``."""
from __future__ import annotations

from ..cni import jsonlite  # not json: ~4.5 ms per frozen exec (re, enum)
from ..cni.errors import CNIError
from ..cni.trace import span
from ..records import record
from . import spawn

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any


def available() -> bool:
    return spawn.which("nft") is not None


def run_script(script: str) -> None:
    with span("nftables"):
        proc = spawn.run(["nft", "-f", "-"], input=script, text=True)
    if proc.returncode != 0:
        raise CNIError(999, f"nft failed: {proc.stderr.strip()[:400]}",
                       "the rules were not changed; check nftables on this node")


@record
class NftRule:
    family: str
    table: str
    chain: str
    handle: int
    comment: str
    expr: list[Any]


def list_rules(family: str, table: str, chain: str | None = None) -> list[NftRule]:
    """Rules of a table (or one chain); empty when the table or chain does not exist."""
    cmd = ["nft", "-j", "list", "chain" if chain else "table", family, table]
    if chain:
        cmd.append(chain)
    with span("nftables"):
        proc = spawn.run(cmd, text=True)
    if proc.returncode != 0:
        return []
    out = []
    for item in jsonlite.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule:
            out.append(NftRule(rule["family"], rule["table"], rule["chain"], rule["handle"],
                               rule.get("comment", ""), rule.get("expr", [])))
    return out


def table_exists(family: str, table: str) -> bool:
    return spawn.run(["nft", "list", "table", family, table]).returncode == 0


def quote_comment(text: str) -> str:
    return '"' + text.replace('"', "") + '"'
