"""subnet.env: what flanneld tells the CNI plugin (flanneld-reference §4, `pkg/subnet/subnet.go@H`).

``render`` writes the reference's text byte for byte; ``write`` is renameio's atomic replace (temp
file in the same directory, fsync, 0644 whatever the umask, rename, fsync of the directory);
``read`` is a godotenv-like reader for what a previous run (ours or Go's) left behind.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tempfile

from .config import go_parse_cidr

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network


class SubnetEnvError(ValueError):
    """A subnet.env that godotenv would refuse (the text names the file and line)."""


def _first_address(subnet: IPv4Net | IPv6Net) -> str:
    """FLANNEL_SUBNET: the lease's network address + 1 with the lease's prefix."""
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"


def render(*, network: IPv4Net | None, subnet: IPv4Net | None, ipv6_network: IPv6Net | None = None,
           ipv6_subnet: IPv6Net | None = None, mtu: int, ipmasq: bool, enable_ipv4: bool = True,
           enable_ipv6: bool = False) -> str:
    """WriteSubnetFile's text: the v4 pair (EnableIPv4), the v6 pair (EnableIPv6), MTU, IPMASQ."""
    out = []
    if enable_ipv4:
        if network is None or subnet is None:
            # the reference would write 0.0.0.0/0, which no plugin can use
            raise ValueError("subnet.env: IPv4 is enabled but the Network or the lease's subnet is missing")
        out.append(f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={_first_address(subnet)}\n")
    if enable_ipv6:
        if ipv6_network is None or ipv6_subnet is None:
            raise ValueError("subnet.env: IPv6 is enabled but the IPv6Network or the lease's IPv6 subnet is missing")
        out.append(f"FLANNEL_IPV6_NETWORK={ipv6_network}\nFLANNEL_IPV6_SUBNET={_first_address(ipv6_subnet)}\n")
    out.append(f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={'true' if ipmasq else 'false'}\n")
    return "".join(out)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: str, content: str) -> None:
    """mkdir -p (0755), temp file beside ``path``, fsync, chmod 0644, rename(2), fsync the directory.

    A reader sees the old file or the new one, never a torn one; nothing is left behind on failure.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        try:
            data = memoryview(content.encode())
            while data:
                data = data[os.write(fd, data):]
            os.fchmod(fd, 0o644)  # mkstemp's 0600, and whatever the umask would have done
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


# -- the reader ---------------------------------------------------------------------------------------

_KEY = re.compile(r"(?:export[ \t]+)?([\w.]+)[ \t]*[=:][ \t]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


def _unescape(value: str) -> str:
    """godotenv expandEscapes for double-quoted values; unknown escapes are kept as written."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)


def parse(text: str, where: str = "subnet.env") -> dict[str, str]:
    """godotenv.Parse, near enough: ``KEY=value``, ``export KEY=value``, ``KEY: value``, single or double
    quotes (double ones unescaped, may span lines), ``#`` comment lines and `` #`` trailing comments,
    blank lines. Variable expansion is not done (subnet.env never uses it). Raises SubnetEnvError."""
    out: dict[str, str] = {}
    pos, n = 0, len(text)

    def fail(msg: str) -> SubnetEnvError:
        return SubnetEnvError(f"{where}:{text.count(chr(10), 0, pos) + 1}: {msg}")

    while pos < n:
        if text[pos].isspace():
            pos += 1
            continue
        if text[pos] == "#":
            end = text.find("\n", pos)
            pos = n if end < 0 else end + 1
            continue
        m = _KEY.match(text, pos)
        if not m:
            line_end = text.find("\n", pos)
            raise fail(f"unexpected character in variable name near {text[pos:line_end if line_end >= 0 else n]!r}")
        key, pos = m.group(1), m.end()
        if pos < n and text[pos] in "'\"":
            quote, j = text[pos], pos + 1
            while j < n and (text[j] != quote or text[j - 1] == "\\"):
                j += 1
            if j >= n:
                raise fail(f"unterminated quoted value for {key}")
            value = text[pos + 1:j]
            out[key] = _unescape(value) if quote == '"' else value
            pos = j + 1
            rest_end = text.find("\n", pos)
            rest = text[pos:rest_end if rest_end >= 0 else n].strip()
            if rest and not rest.startswith("#"):
                raise fail(f"unexpected text after the quoted value of {key}: {rest!r}")
            pos = n if rest_end < 0 else rest_end + 1
        else:
            end = text.find("\n", pos)
            end = n if end < 0 else end
            value = text[pos:end]
            comment = re.search(r"\s#", value)
            if comment:
                value = value[:comment.start()]
            out[key] = value.strip()
            pos = end + 1
    return out


def read(path: str) -> dict[str, str]:
    """The file's variables; a missing file is {}. Raises SubnetEnvError or OSError."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    return parse(text, path)


def _one_cidr(env: dict[str, str], key: str) -> IPv4Net | IPv6Net | None:
    """ReadCIDRFromSubnetFile: the entries that parse; exactly one is needed, else nothing."""
    nets = []
    for item in env.get(key, "").split(","):
        try:
            nets.append(go_parse_cidr(item))
        except ValueError:
            continue
    return nets[0] if len(nets) == 1 else None


def _v4(env: dict[str, str], key: str) -> IPv4Net | None:
    net = _one_cidr(env, key)
    return net if isinstance(net, IPv4Net) else None


def _v6(env: dict[str, str], key: str) -> IPv6Net | None:
    net = _one_cidr(env, key)
    return net if isinstance(net, IPv6Net) else None


def previous_subnets(path: str) -> tuple[IPv4Net | None, IPv6Net | None, IPv4Net | None, IPv6Net | None]:
    """(FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK) of a previous run,
    masked to their networks; None where absent, unreadable, or listing more than one CIDR."""
    try:
        env = read(path)
    except (OSError, SubnetEnvError):
        env = {}  # the reference logs "Couldn't fetch previous ..." and carries on
    return (_v4(env, "FLANNEL_SUBNET"), _v6(env, "FLANNEL_IPV6_SUBNET"), _v4(env, "FLANNEL_NETWORK"),
            _v6(env, "FLANNEL_IPV6_NETWORK"))


def matches(path: str, content: str) -> bool:
    """True when ``path`` holds exactly ``content`` (the daemon rewrites a missing or changed file, ⚠ #556)."""
    try:
        with open(path, "rb") as f:
            return f.read() == content.encode()
    except OSError:
        return False
