"""flanneld's command line and FLANNELD_* environment (flanneld-reference §1.1, §1.2 step 1).

Go `flag` syntax, exactly: ``-x`` is ``--x``; ``--x=v`` and ``--x v``; a bool takes a value only
as ``--x=false``; ``--`` or the first non-flag ends the flags. Then, for each flag not given on the
command line, ``FLANNELD_<NAME>`` (flagutil.SetFlagsFromEnv), except that ``--version`` is looked
at before the environment. Where the reference is weak (⚠) we do better: a bad flag or value is a
UsageError (exit 2, not 0), leftover arguments are refused instead of ignored, a bad env value is
an error naming the variable, ``FLANNELD_IFACE=a,b`` is two interfaces, the password is masked in
the log line, and the families of --public-ip/--public-ipv6 are checked instead of panicking.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from ..records import field, record

ENV_PREFIX = "FLANNELD"


class UsageError(Exception):
    """A bad flag or value: the caller prints it with a short usage hint and exits 2."""


class FatalError(Exception):
    """Options that parse but cannot be used (§1.2 step 1): the caller logs it and exits 1."""


@record
class Options:
    etcd_endpoints: list[str] = field(default_factory=lambda: ["http://127.0.0.1:4001", "http://127.0.0.1:2379"])
    etcd_prefix: str = "/coreos.com/network"
    etcd_keyfile: str = ""
    etcd_certfile: str = ""
    etcd_cafile: str = ""
    etcd_username: str = ""
    etcd_password: str = ""
    kube_subnet_mgr: bool = False
    kube_api_url: str = ""
    kubeconfig_file: str = ""
    kube_annotation_prefix: str = "flannel.alpha.coreos.com"
    iface: list[str] = field(default_factory=list)
    iface_regex: list[str] = field(default_factory=list)
    iface_can_reach: str = ""
    subnet_file: str = "/run/flannel/subnet.env"
    net_config_path: str = "/etc/kube-flannel/net-conf.json"
    public_ip: str = ""
    public_ipv6: str = ""
    subnet_lease_renew_margin: int = 60  # minutes
    ip_masq: bool = False
    ip_masq_fully_random_disable: bool = False
    iptables_resync: int = 5  # seconds
    iptables_forward_rules: bool = True
    ip_blackhole_route: bool = False
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    set_node_network_unavailable: bool = True
    version: bool = False
    help: bool = False
    v: int = 0  # klog verbosity
    vmodule: str = ""
    log_backtrace_at: str = ""
    # ours: where state that must survive a restart lives (the VTEP MAC); "" = dirname(subnet_file)
    state_dir: str = ""
    reconcile_period: int = 10  # seconds; ours: the full data-plane reconcile (events trigger it at once)


_record_repr = Options.__repr__


def _masked_repr(self: Options) -> str:
    """The password never reaches a log through repr() either."""
    shown = _record_repr(self)
    if self.etcd_password:
        shown = shown.replace(f"etcd_password={self.etcd_password!r}", "etcd_password='********'", 1)
    return shown


Options.__repr__ = _masked_repr  # type: ignore[method-assign,assignment]


# -- Go value parsers: each returns the value or raises _BadValue with Go's error text -----------

class _BadValue(Exception):
    pass


_ERR_PARSE = "parse error"  # flag's numError: strconv.ErrSyntax
_ERR_RANGE = "value out of range"  # strconv.ErrRange


def _go_bool(s: str) -> bool:
    """strconv.ParseBool."""
    if s in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if s in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise _BadValue(_ERR_PARSE)


def _underscore_ok(s: str) -> bool:
    """strconv.underscoreOK: '_' only between digits (a base prefix counts as a digit)."""
    saw = "^"
    if s[:1] in ("+", "-"):
        s = s[1:]
    i, hexa = 0, False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    for c in s[i:]:
        if c.isascii() and (c.isdigit() or (hexa and c.lower() in "abcdef")):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def parse_go_int(s: str, base: int = 0, bits: int = 64) -> int:
    """strconv.ParseInt(s, base, bits); base 0 takes 0x/0o/0b/0 prefixes and '_' separators.

    Raises ValueError("syntax") or ValueError("range")."""
    s0 = s
    if not s:
        raise ValueError("syntax")
    neg = s[0] == "-"
    if s[0] in "+-":
        s = s[1:]
        if not s:
            raise ValueError("syntax")
    if base == 0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1].lower() == "b":
                base, s = 2, s[2:]
            elif len(s) >= 3 and s[1].lower() == "o":
                base, s = 8, s[2:]
            elif len(s) >= 3 and s[1].lower() == "x":
                base, s = 16, s[2:]
            else:
                base, s = 8, s[1:]
        underscores = "_" in s
        if underscores and not _underscore_ok(s0):
            raise ValueError("syntax")
        s = s.replace("_", "")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    if not all(c.isascii() and c.lower() in digits for c in s):
        raise ValueError("syntax")
    n = int(s, base) if s else 0
    limit = 1 << (bits - 1)
    if (not neg and n >= limit) or (neg and n > limit):
        raise ValueError("range")
    return -n if neg else n


def _go_int(s: str) -> int:
    """flag.IntVar: strconv.ParseInt(s, 0, 64), errors reduced to "parse error" / "value out of range"."""
    try:
        return parse_go_int(s, 0, 64)
    except ValueError as exc:
        raise _BadValue(_ERR_RANGE if str(exc) == "range" else _ERR_PARSE) from None


def _klog_level(s: str) -> int:
    """klog Level.Set: strconv.ParseInt(value, 10, 32); the error is strconv's own text."""
    try:
        return parse_go_int(s, 10, 32)
    except ValueError as exc:
        reason = "value out of range" if str(exc) == "range" else "invalid syntax"
        raise _BadValue(f"strconv.ParseInt: parsing {go_quote(s)}: {reason}") from None


_VMODULE_SYNTAX = "syntax error: expect comma-separated list of filename=N"


def _klog_vmodule(s: str) -> str:
    """klog moduleSpec.Set: ``pattern=N[,pattern=N...]``."""
    for pat in s.split(","):
        if not pat:
            continue  # klog allows empty entries ("a=1,,b=2")
        parts = pat.split("=")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise _BadValue(_VMODULE_SYNTAX)
        try:
            level = parse_go_int(parts[1], 10, 32)
        except ValueError:
            raise _BadValue(_VMODULE_SYNTAX) from None
        if level < 0:
            raise _BadValue("negative value for vmodule level")
    return s


_TRACE_SYNTAX = "syntax error: expect file.go:234"


def _klog_trace(s: str) -> str:
    """klog traceLocation.Set: ``file.go:N`` (N > 0), or "" to unset."""
    if s == "":
        return s
    fields = s.split(":")
    if len(fields) != 2 or "." not in fields[0]:
        raise _BadValue(_TRACE_SYNTAX)
    try:
        line = parse_go_int(fields[1], 10, 64)
    except ValueError:
        raise _BadValue(_TRACE_SYNTAX) from None
    if line <= 0:
        raise _BadValue("negative or zero value for level")
    return s


def go_quote(s: str) -> str:
    """strconv.Quote, as %q prints a string."""
    out = ['"']
    named = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
             "\t": "\\t", "\v": "\\v"}
    for c in s:
        if c in named:
            out.append(named[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


# -- the flag table (main.go@H init; usage texts are the reference's) -----------------------------

@record
class _Flag:
    name: str
    kind: str  # string | csv | int | bool | slice | level | vmodule | trace
    default: str  # Go's DefValue text
    usage: str

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}_{self.name.upper().replace('-', '_')}"


_F = _Flag
FLAGS: dict[str, _Flag] = {f.name: f for f in (
    _F("etcd-endpoints", "csv", "http://127.0.0.1:4001,http://127.0.0.1:2379",
       "a comma-delimited list of etcd endpoints"),
    _F("etcd-prefix", "string", "/coreos.com/network", "etcd prefix"),
    _F("etcd-keyfile", "string", "", "SSL key file used to secure etcd communication"),
    _F("etcd-certfile", "string", "", "SSL certification file used to secure etcd communication"),
    _F("etcd-cafile", "string", "", "SSL Certificate Authority file used to secure etcd communication"),
    _F("etcd-username", "string", "", "username for BasicAuth to etcd"),
    _F("etcd-password", "string", "", "password for BasicAuth to etcd"),
    _F("iface", "slice", "[]", "interface to use (IP or name) for inter-host communication. Can be specified "
       "multiple times to check each option in order. Returns the first match found."),
    _F("iface-regex", "slice", "[]", "regex expression to match the first interface to use (IP or name) for "
       "inter-host communication. Can be specified multiple times to check each regex in order. Returns the "
       "first match found. Regexes are checked after specific interfaces specified by the iface option have "
       "already been checked."),
    _F("iface-can-reach", "string", "", "detect interface to use (IP or name) for inter-host communication based "
       "on which will be used for provided IP. This is exactly the interface to use of command "
       "'ip route get <ip-address>'"),
    _F("subnet-file", "string", "/run/flannel/subnet.env",
       "filename where env variables (subnet, MTU, ... ) will be written to"),
    _F("public-ip", "string", "", "IP accessible by other nodes for inter-host communication"),
    _F("public-ipv6", "string", "", "IPv6 accessible by other nodes for inter-host communication"),
    _F("subnet-lease-renew-margin", "int", "60", "subnet lease renewal margin, in minutes, ranging from 1 to 1439"),
    _F("ip-masq", "bool", "false", "setup IP masquerade rule for traffic destined outside of overlay network"),
    _F("ip-masq-fully-random-disable", "bool", "false", "disable fully-random mode for MASQUERADE"),
    _F("kube-subnet-mgr", "bool", "false", "contact the Kubernetes API for subnet assignment instead of etcd."),
    _F("kube-api-url", "string", "",
       "Kubernetes API server URL. Does not need to be specified if flannel is running in a pod."),
    _F("kube-annotation-prefix", "string", "flannel.alpha.coreos.com",
       'Kubernetes annotation prefix. Can contain single slash "/", otherwise it will be appended at the end.'),
    _F("kubeconfig-file", "string", "",
       "kubeconfig file location. Does not need to be specified if flannel is running in a pod."),
    _F("version", "bool", "false", "print version and exit"),
    _F("healthz-ip", "string", "0.0.0.0", "the IP address for healthz server to listen"),
    _F("healthz-port", "int", "0", "the port for healthz server to listen(0 to disable)"),
    _F("iptables-resync", "int", "5", "resync period for iptables rules, in seconds"),
    _F("iptables-forward-rules", "bool", "true", "add default accept rules to FORWARD chain in iptables"),
    _F("ip-blackhole-route", "bool", "false", "add blackroute route ont the node for the local podCIDR"),
    _F("net-config-path", "string", "/etc/kube-flannel/net-conf.json", "path to the network configuration file"),
    _F("set-node-network-unavailable", "bool", "true", "set NodeNetworkUnavailable after ready"),
    # klog's, copied by main.go (copyFlag)
    _F("v", "level", "0", "number for the log level verbosity"),
    _F("vmodule", "vmodule", "", "comma-separated list of pattern=N settings for file-filtered logging"),
    _F("log_backtrace_at", "trace", ":0", "when logging hits line file:N, emit a stack trace"),
    # ours
    _F("state-dir", "string", "", "directory for state kept across restarts (the VTEP MAC); "
       "empty means the directory of --subnet-file"),
    _F("reconcile-period", "int", "10", "period of the full reconcile of routes, neighbours and FDB entries "
       "with the kernel, in seconds (netlink events and lease changes trigger it at once)"),
)}

_PARSERS: dict[str, Callable[[str], Any]] = {
    "string": str, "csv": lambda s: s.split(","), "int": _go_int, "bool": _go_bool,
    "level": _klog_level, "vmodule": _klog_vmodule, "trace": _klog_trace,
}


def _set(values: dict[str, Any], flag: _Flag, raw: str, *, from_env: bool = False) -> None:
    """flag.Value.Set; raises _BadValue."""
    if flag.kind == "slice":
        # ⚠ the reference appends FLANNELD_IFACE=a,b as one entry; a list is what is meant
        items = [p for p in raw.split(",") if p] if from_env else [raw]
        values[flag.attr] = [*values[flag.attr], *items]
    else:
        values[flag.attr] = _PARSERS[flag.kind](raw)


def _defaults() -> dict[str, Any]:
    opts = Options()
    return {name: getattr(opts, name) for name in Options.__record_fields__}  # type: ignore[attr-defined]


def _parse_command_line(args: list[str], values: dict[str, Any]) -> tuple[set[str], list[str]]:
    """flag.FlagSet.Parse: returns the flags seen and the leftover arguments."""
    seen: set[str] = set()
    while args:
        s = args[0]
        if len(s) < 2 or s[0] != "-":
            break
        minuses = 2 if s[1] == "-" else 1
        if s == "--":
            return seen, args[1:]
        name = s[minuses:]
        if not name or name[0] in "-=":
            raise UsageError(f"bad flag syntax: {s}")
        args = args[1:]
        has_value, value = False, ""
        if "=" in name[1:]:
            name, value = name.split("=", 1)
            has_value = True
        flag = FLAGS.get(name)
        if flag is None:
            if name in ("help", "h"):
                values["help"] = True
                return seen, []
            raise UsageError(f"flag provided but not defined: -{name}")
        if flag.kind == "bool":
            try:
                values[flag.attr] = _go_bool(value) if has_value else True
            except _BadValue as exc:
                raise UsageError(f"invalid boolean value {go_quote(value)} for -{name}: {exc}") from None
        else:
            if not has_value and args:
                value, args, has_value = args[0], args[1:], True
            if not has_value:
                raise UsageError(f"flag needs an argument: -{name}")
            try:
                _set(values, flag, value)
            except _BadValue as exc:
                raise UsageError(f"invalid value {go_quote(value)} for flag -{name}: {exc}") from None
        seen.add(name)
    return seen, args


def _apply_env(env: Mapping[str, str], seen: set[str], values: dict[str, Any]) -> None:
    """flagutil.SetFlagsFromEnv: every flag not on the command line, in name order."""
    errors = []
    for name in sorted(FLAGS):
        flag = FLAGS[name]
        raw = env.get(flag.env, "")
        if name in seen or raw == "" or name == "version":  # ⚠ FLANNELD_VERSION: read too late upstream
            continue
        try:
            _set(values, flag, raw, from_env=True)
        except _BadValue as exc:
            errors.append(f"invalid value {go_quote(raw)} for {flag.env}: {exc}")
    if errors:
        raise UsageError("; ".join(errors))


def parse_args(argv: list[str], env: Mapping[str, str]) -> Options:
    """The command line (without argv[0]), then the environment (§1.1)."""
    values = _defaults()
    seen, rest = _parse_command_line(list(argv), values)
    if values["help"]:
        return Options(**values)
    if rest:
        raise UsageError(f"unexpected argument {go_quote(rest[0])}: flanneld takes no arguments "
                         "(a bool flag takes its value as --flag=false)")
    if not values["version"]:
        _apply_env(env, seen, values)
    return Options(**values)


def usage(argv0: str) -> str:
    """`Usage: <argv0> [OPTION]...` and flag.PrintDefaults: flags sorted, type, usage, non-zero default."""
    zero = {"string": "", "csv": "", "int": "0", "bool": "false", "slice": "[]", "level": "0", "vmodule": "",
            "trace": ":0"}
    type_name = {"string": "string", "csv": "string", "int": "int", "bool": "", "slice": "value",
                 "level": "value", "vmodule": "value", "trace": "value"}
    lines = [f"Usage: {argv0} [OPTION]..."]
    for name in sorted(FLAGS):
        flag = FLAGS[name]
        head = f"  -{name}" + (f" {type_name[flag.kind]}" if type_name[flag.kind] else "")
        text = head + ("\t" if len(head) <= 4 else "\n    \t") + flag.usage
        if flag.default != zero[flag.kind]:
            shown = go_quote(flag.default) if flag.kind in ("string", "csv") else flag.default
            text += f" (default {shown})"
        lines.append(text)
    return "\n".join(lines) + "\n"


def _check_ip(value: str, flag: str, want: int, other: str) -> None:
    if not value:
        return
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise FatalError(f"Invalid {flag} option {go_quote(value)}: not an IP address") from None
    if want == 4 and isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        raise FatalError(f"Invalid {flag} option {go_quote(value)}: not an IPv4 address (use {other} for IPv6)")
    if want == 6 and isinstance(addr, ipaddress.IPv4Address):
        raise FatalError(f"Invalid {flag} option {go_quote(value)}: not an IPv6 address (use {other} for IPv4)")


def validate(opts: Options) -> None:
    """§1.2 step 1: the renew margin as the reference, plus checks where it panics or spins (⚠)."""
    if not 0 < opts.subnet_lease_renew_margin < 24 * 60:
        raise FatalError("Invalid subnet-lease-renew-margin option, out of acceptable range")
    # ⚠ the reference panics in ip.FromIP on a wrong family (#1629, #1985)
    _check_ip(opts.public_ip, "--public-ip", 4, "--public-ipv6")
    _check_ip(opts.public_ipv6, "--public-ipv6", 6, "--public-ip")
    if not 0 <= opts.healthz_port <= 65535:
        raise FatalError(f"Invalid healthz-port option {opts.healthz_port}, out of acceptable range 0..65535")
    if opts.reconcile_period < 1:
        raise FatalError(f"Invalid reconcile-period option {opts.reconcile_period}, must be at least 1 second")
    if opts.iptables_resync < 1:  # ⚠ the reference's loops spin on time.After(0)
        raise FatalError(f"Invalid iptables-resync option {opts.iptables_resync}, must be at least 1 second")
    if not opts.kube_subnet_mgr and not all(opts.etcd_endpoints):
        raise FatalError(f"Invalid etcd-endpoints option {go_quote(','.join(opts.etcd_endpoints))}: "
                         "an endpoint is empty")


# CmdLineOpts field order and names (main.go@H), for the %+v-shaped log line
_GO_FIELDS = (
    ("etcdEndpoints", "etcd_endpoints"), ("etcdPrefix", "etcd_prefix"), ("etcdKeyfile", "etcd_keyfile"),
    ("etcdCertfile", "etcd_certfile"), ("etcdCAFile", "etcd_cafile"), ("etcdUsername", "etcd_username"),
    ("etcdPassword", "etcd_password"), ("version", "version"), ("kubeSubnetMgr", "kube_subnet_mgr"),
    ("kubeApiUrl", "kube_api_url"), ("kubeAnnotationPrefix", "kube_annotation_prefix"),
    ("kubeConfigFile", "kubeconfig_file"), ("iface", "iface"), ("ifaceRegex", "iface_regex"),
    ("ipMasq", "ip_masq"), ("ipMasqRandomFullyDisable", "ip_masq_fully_random_disable"),
    ("ifaceCanReach", "iface_can_reach"), ("subnetFile", "subnet_file"), ("publicIP", "public_ip"),
    ("publicIPv6", "public_ipv6"), ("subnetLeaseRenewMargin", "subnet_lease_renew_margin"),
    ("healthzIP", "healthz_ip"), ("healthzPort", "healthz_port"), ("iptablesResyncSeconds", "iptables_resync"),
    ("iptablesForwardRules", "iptables_forward_rules"), ("blackholeRoute", "ip_blackhole_route"),
    ("netConfPath", "net_config_path"), ("setNodeNetworkUnavailable", "set_node_network_unavailable"),
    ("stateDir", "state_dir"), ("reconcilePeriod", "reconcile_period"),  # ours
)


def _go_value(value: Any, attr: str) -> str:
    if attr == "etcd_endpoints":
        return ",".join(value)  # a plain string in the reference
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(value) + "]"
    return str(value)


def format_options(opts: Options) -> str:
    """The first log line, `CLI flags config: {...}` (%+v); ⚠ the password is masked."""
    parts = []
    for go_name, attr in _GO_FIELDS:
        value = getattr(opts, attr)
        text = "********" if attr == "etcd_password" and value else _go_value(value, attr)
        parts.append(f"{go_name}:{text}")
    return "CLI flags config: {" + " ".join(parts) + "}"
