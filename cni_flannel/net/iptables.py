"""iptables through one ``iptables-restore --noflush`` batch per verb and family.

Reading is one ``iptables-save -t <table>``; writing is one restore batch that
waits on the xtables lock (-w). Our own processes are serialised by a flock so
that the read-decide-write of one verb is not interleaved with another's.
Arguments are always lists: no shell ever sees a rule.
"""
from __future__ import annotations

import fcntl
import os

from ..cni.errors import CNIError
from ..cni.trace import span
from ..ctx import contextmanager
from ..records import field, record
from . import spawn

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Iterator

LOCK_PATH = os.environ.get("CNI_FLANNEL_IPTABLES_LOCK", "/run/cni-flannel.iptables.lock")
WAIT_SECONDS = "10"


try:  # the C module alone: hashlib loads OpenSSL, ~2 ms per frozen exec
    from _sha512 import sha512
except ImportError:  # Python 3.12+ keeps it in _sha2
    from hashlib import sha512


def hash_name(prefix: str, to_hash: str, length: int = 28) -> str:
    """utils.MustFormatHashWithPrefix: prefix + sha512 hex, cut to ``length``."""
    return (prefix + sha512(to_hash.encode()).hexdigest())[:length]


def chain_name(network: str, container_id: str, prefix: str = "CNI-") -> str:
    return hash_name(prefix, network + container_id)


def binary(family: int, tool: str) -> str:
    return {("save", 4): "iptables-save", ("save", 6): "ip6tables-save",
            ("restore", 4): "iptables-restore", ("restore", 6): "ip6tables-restore"}[(tool, family)]


def available(family: int = 4) -> bool:
    return spawn.which(binary(family, "restore")) is not None


@contextmanager
def locked() -> Iterator[None]:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@record
class TableState:
    """A parsed ``iptables-save -t <table>``: chains and their rules (as argument lists).

    Rules are split into arguments (``split_rule``) only for the chains a caller asks
    about: a busy node's nat table holds thousands of rules.
    """

    chains: set[str] = field(default_factory=set)
    raw: dict[str, list[str]] = field(default_factory=dict)
    rules: dict[str, list[list[str]]] = field(default_factory=dict)

    def has_chain(self, name: str) -> bool:
        return name in self.chains

    def chain_rules(self, name: str) -> list[list[str]]:
        if name not in self.rules:
            self.rules[name] = [split_rule(line)[2:] for line in self.raw.get(name, [])]
        return self.rules[name]

    def find(self, chain: str, rule: list[str]) -> bool:
        if chain in self.rules:
            return rule in self.rules[chain]
        hint = rule[-1] if rule else ""  # parse only lines that can match
        return any(split_rule(line)[2:] == rule for line in self.raw.get(chain, []) if hint in line)

    def jumps_to(self, chain: str, target: str) -> list[list[str]]:
        """Rules of ``chain`` that end in ``-j target``."""
        suffix = f" -j {target}"
        return [split_rule(line)[2:] for line in self.raw.get(chain, []) if line.endswith(suffix)]


def save(family: int, table: str = "nat") -> TableState:
    with span("iptables"):
        proc = spawn.run([binary(family, "save"), "-t", table], text=True)
    state = TableState()
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "Table does not exist" in proc.stderr:
            return state
        raise CNIError(999, f"{binary(family, 'save')} -t {table} failed: {proc.stderr.strip()[:300]}",
                       "check that iptables works on this node (nf_tables or legacy backend)")
    for line in proc.stdout.splitlines():
        if line.startswith(":"):
            state.chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            state.raw.setdefault(line[3:].split(" ", 1)[0], []).append(line)
    return state


_DQ_ESCAPABLE = frozenset('\\"')  # shlex's rule (a shell would also take $ ` and newline)


def split_rule(line: str) -> list[str]:
    """shlex.split(line), without shlex (it imports re: ~3 ms per frozen exec).

    shlex's POSIX words: blanks separate; '...' is literal; in "..." a backslash escapes only
    \\ and "; elsewhere it escapes any character. iptables-save quotes comments
    with double quotes, the inverse of ``quote``; tests check this against shlex.
    """
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r\n":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ValueError("No closing quotation")
            word.append(line[i + 1:end])
            in_word, i = True, end
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise ValueError("No closing quotation")
                c = line[i]
                if c == '"':
                    break
                if c == "\\" and i + 1 >= n:
                    raise ValueError("No escaped character")
                if c == "\\" and line[i + 1] in _DQ_ESCAPABLE:
                    i += 1
                    c = line[i]
                word.append(c)
                i += 1
            in_word = True
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("No escaped character")
            i += 1
            word.append(line[i])
            in_word = True
        else:
            word.append(c)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    return words


def quote(args: list[str]) -> str:
    """Quote one rule for iptables-restore (double quotes, backslash-escaped)."""
    out = []
    for a in args:
        if a and all(c.isalnum() or c in "-_./:!,=+[]" for c in a):
            out.append(a)
        else:
            out.append('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(out)


@record
class Batch:
    """Lines for one iptables-restore --noflush run on one table."""

    table: str = "nat"
    lines: list[str] = field(default_factory=list)

    def new_chain(self, name: str) -> None:
        # A declared chain is created, or flushed when it exists: callers then refill it.
        self.lines.append(f":{name} - [0:0]")

    def append(self, chain: str, rule: list[str]) -> None:
        self.lines.append(f"-A {chain} {quote(rule)}")

    def insert(self, chain: str, rule: list[str], pos: int = 1) -> None:
        self.lines.append(f"-I {chain} {pos} {quote(rule)}")

    def delete(self, chain: str, rule: list[str]) -> None:
        self.lines.append(f"-D {chain} {quote(rule)}")

    def flush(self, chain: str) -> None:
        self.lines.append(f"-F {chain}")

    def delete_chain(self, chain: str) -> None:
        self.lines.append(f"-X {chain}")

    def text(self) -> str:
        return "\n".join([f"*{self.table}", *self.lines, "COMMIT", ""])

    def run(self, family: int) -> None:
        if not self.lines:
            return
        with span("iptables"):
            proc = spawn.run([binary(family, "restore"), "--noflush", "-w", WAIT_SECONDS], input=self.text(),
                             text=True)
        if proc.returncode != 0:
            raise CNIError(999, f"{binary(family, 'restore')} failed: {proc.stderr.strip()[:400]}",
                           "the rules were not changed; check iptables on this node")
