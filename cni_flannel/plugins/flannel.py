"""The flannel meta-plugin (flannel-io/cni-plugin, cni-reference §2).

Reads subnet.env, builds the delegate config exactly as the reference does,
saves it to ``dataDir/<containerID>`` and runs the delegate: our bridge (and
host-local with it) in this process, anything else exec'd from CNI_PATH.
"""
from __future__ import annotations

import ipaddress
import os
import sys

from .. import delegate
from ..cni import jsonlite, schemas  # jsonlite, not json: ~4.5 ms per frozen exec (re, enum)
from ..cni.conf import NetConf
from ..cni.env import CmdArgs
from ..cni.errors import INVALID_CONFIG, IO_FAILURE, PLUGIN_NOT_AVAILABLE, TRY_AGAIN_LATER, CNIError, errno_text
from ..cni.result import Result
from ..cni.skel import Plugin
from ..records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"

SCHEMA = schemas.netconf({
    "subnetFile": schemas.ABS_PATH,
    "dataDir": schemas.ABS_PATH,
    # delegate and ipam are Go maps in flannel's NetConf: their keys are kept exactly
    # (the delegate decodes them itself); runtimeConfig is one too (netconf's default).
    "delegate": {"type": "object", schemas.GO_MAP: True,
                 "properties": {"type": {"type": "string", "minLength": 1}}},
    "ipam": {"type": "object"},
})


# -- subnet.env ---------------------------------------------------------------------------------

@record
class SubnetEnv:
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    subnet: ipaddress.IPv4Network | None = None
    ipv6_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    ipv6_subnet: ipaddress.IPv6Network | None = None
    mtu: int | None = None
    ipmasq: bool | None = None


def _cidr(value: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_interface(value).network if "/" in value else _raise(where, value)
    except ValueError:
        return _raise(where, value)


def _raise(where: str, value: str) -> Any:
    raise CNIError(INVALID_CONFIG, f"{where}: {value[:80]!r} is not a CIDR",
                   "flanneld writes CIDRs such as 10.42.1.1/24; check the flannel pod log for this node")


def load_subnet_env(path: str) -> SubnetEnv:
    """loadFlannelSubnetEnv, with errors instead of the reference's panic on malformed lines."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        raise CNIError(TRY_AGAIN_LATER,
                       f"failed to load flannel 'subnet.env' file: open {path}: no such file or directory",
                       "flanneld on this node has not written it yet (it does so once it has a lease); "
                       "check the flannel pod log for this node") from None
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"failed to load flannel 'subnet.env' file: {path}: {errno_text(exc)}",
                       "check the file's permissions and the flannel pod log for this node") from None
    env = SubnetEnv()
    for lineno, line in enumerate(text.splitlines(), 1):
        key, sep, value = line.partition("=")
        known = key in ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
                        "FLANNEL_MTU", "FLANNEL_IPMASQ")
        if not known:
            continue
        where = f"{path} line {lineno}: {key}"
        if not sep:
            raise CNIError(INVALID_CONFIG, f"{where} has no '=' and value",
                           "each line must be KEY=VALUE; check the flannel pod log for this node")
        if key in ("FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"):
            target = env.networks if key == "FLANNEL_NETWORK" else env.ipv6_networks
            for item in value.split(","):
                net = _cidr(item, where)
                if net not in target:
                    target.append(net)
        elif key == "FLANNEL_SUBNET":
            net = _cidr(value, where)
            env.subnet = net if isinstance(net, ipaddress.IPv4Network) else _raise(where, value)
        elif key == "FLANNEL_IPV6_SUBNET":
            net = _cidr(value, where)
            env.ipv6_subnet = net if isinstance(net, ipaddress.IPv6Network) else _raise(where, value)
        elif key == "FLANNEL_MTU":
            if not value.isdigit() or int(value) >= 2**32:
                raise CNIError(INVALID_CONFIG, f"{where}: {value[:40]!r} is not an MTU",
                               "FLANNEL_MTU must be a decimal number such as 1450")
            env.mtu = int(value)
        elif key == "FLANNEL_IPMASQ":
            env.ipmasq = value == "true"
    missing: list[str] = []
    if not env.networks and not env.ipv6_networks:
        missing += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
    if env.subnet is None and env.ipv6_subnet is None:
        missing += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]
    if env.mtu is None:
        missing.append("FLANNEL_MTU")
    if env.ipmasq is None:
        missing.append("FLANNEL_IPMASQ")
    if missing:
        raise CNIError(INVALID_CONFIG, f"failed to load flannel 'subnet.env' file: {path} is missing "
                       f"{', '.join(missing)}", "Check the flannel pod log for this node.")
    return env


# -- the delegate config ------------------------------------------------------------------------

@record
class FlannelConf:
    name: str
    cni_version: str
    subnet_file: str
    data_dir: str
    delegate: dict[str, Any]
    ipam: dict[str, Any] | None
    runtime_config: dict[str, Any] | None


def load_conf(conf: NetConf) -> FlannelConf:
    raw = conf.raw
    dlg = dict(raw.get("delegate") or {})
    for key in ("name", "ipam"):
        if key in dlg:
            raise CNIError(INVALID_CONFIG,
                           f"'delegate' dictionary must not have '{key}' field, it'll be set by flannel",
                           f"remove delegate.{key}" + ("; put IPAM settings in the top-level 'ipam'"
                                                        if key == "ipam" else ""))
    return FlannelConf(name=conf.name, cni_version=str(raw.get("cniVersion") or ""),
                       subnet_file=raw.get("subnetFile") or DEFAULT_SUBNET_FILE,
                       data_dir=raw.get("dataDir") or DEFAULT_DATA_DIR, delegate=dlg,
                       ipam=dict(raw["ipam"]) if isinstance(raw.get("ipam"), dict) else None,
                       runtime_config=raw.get("runtimeConfig") if "runtimeConfig" in raw else None)


def _ipam_routes(user: Any) -> list[dict[str, Any]]:
    routes = []
    for i, r in enumerate(user or []):
        try:
            dst = ipaddress.ip_interface(r["dst"])
            route: dict[str, Any] = {"dst": f"{dst.ip}/{dst.network.prefixlen}"}
            if r.get("gw"):
                route["gw"] = str(ipaddress.ip_address(r["gw"]))
            for k in ("mtu", "advmss", "priority", "table", "scope"):
                if r.get(k):
                    route[k] = r[k]
        except (KeyError, TypeError, ValueError):
            raise CNIError(INVALID_CONFIG, f"failed to read IPAM routes: ipam.routes[{i}] is not a route",
                           'a route is {"dst": "<cidr>", "gw": "<ip>"}') from None
        routes.append(route)
    return routes


def build_delegate(fc: FlannelConf, env: SubnetEnv | None) -> dict[str, Any]:
    """doCmdAdd + getDelegateIPAM of flannel_linux.go, key for key.

    ``env`` is None only when rebuilding a lost config for DEL without subnet.env.
    """
    d = dict(fc.delegate)
    d["name"] = fc.name
    d.setdefault("type", "bridge")
    if not isinstance(d["type"], str):
        raise CNIError(INVALID_CONFIG, "field delegate.type must be a string", 'use e.g. "bridge"')
    if env is not None:
        d.setdefault("ipMasq", not env.ipmasq)  # if flannel is not doing ipmasq, we should
        d.setdefault("mtu", env.mtu)
    if d["type"] == "bridge":
        d.setdefault("isGateway", True)
    if fc.cni_version:
        d["cniVersion"] = fc.cni_version
    ipam = dict(fc.ipam or {})
    ipam.setdefault("type", "host-local")
    routes = _ipam_routes(ipam.get("routes"))
    if env is not None:
        ranges = []
        if env.subnet is not None:
            ranges.append([{"subnet": str(env.subnet)}])
        if env.ipv6_subnet is not None:
            ranges.append([{"subnet": str(env.ipv6_subnet)}])
        ipam["ranges"] = ranges
        routes += [{"dst": str(n)} for n in env.networks + env.ipv6_networks]
    ipam["routes"] = routes
    d["ipam"] = ipam
    if fc.runtime_config is not None:
        d["runtimeConfig"] = fc.runtime_config
    return d


def go_json(obj: Any) -> bytes:
    """json.Marshal of a Go map: compact, sorted keys, <>& and U+2028/9 escaped, UTF-8."""
    text = jsonlite.dumps(_go_numbers(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode()


def _go_numbers(obj: Any) -> Any:
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 1e21:
        return int(obj)  # Go's float64 prints integral values without ".0"
    if isinstance(obj, dict):
        return {k: _go_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_go_numbers(v) for v in obj]
    return obj


# -- the saved config ---------------------------------------------------------------------------

def _saved_path(fc: FlannelConf, container_id: str) -> str:
    return os.path.join(fc.data_dir, container_id)  # container_id is validated by the env layer


def save(fc: FlannelConf, container_id: str, data: bytes) -> None:
    path = _saved_path(fc, container_id)
    try:
        os.makedirs(fc.data_dir, mode=0o700, exist_ok=True)
        from ..ipam.store import write_atomic

        write_atomic(path, data, 0o600)
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"failed to save the delegate config to {path}: {errno_text(exc)}",
                       "flannel's dataDir must be a writable directory with free space") from None


def remove_saved(fc: FlannelConf, container_id: str) -> None:
    """The saved config, and any temp file a killed ADD left while writing it."""
    try:
        os.unlink(_saved_path(fc, container_id))
    except FileNotFoundError:
        pass
    prefix = f".{container_id}.tmp"
    try:
        names = os.listdir(fc.data_dir)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(fc.data_dir, name))
            except FileNotFoundError:
                pass


def _warn(msg: str) -> None:
    sys.stderr.write(f"flannel: {msg}\n")


# -- verbs --------------------------------------------------------------------------------------

def cmd_add(args: CmdArgs, conf: NetConf) -> Result | None:
    fc = load_conf(conf)
    env = load_subnet_env(fc.subnet_file)
    d = build_delegate(fc, env)
    data = go_json(d)
    save(fc, args.container_id, data)
    try:
        return delegate.run("ADD", d["type"], data, args)
    except BaseException as exc:
        remove_saved(fc, args.container_id)  # the reference leaks it (plugins#426)
        if isinstance(exc, CNIError):
            raise CNIError(exc.code, f"failed to delegate add: {exc.msg}", exc.details) from None
        raise


def _load_saved(fc: FlannelConf, args: CmdArgs) -> tuple[dict[str, Any], bytes] | None:
    """The saved delegate config; None when there is none. A torn file is rebuilt."""
    path = _saved_path(fc, args.container_id)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        data = b""
        _warn(f"cannot read {path} ({errno_text(exc)}); rebuilding the delegate config from subnet.env")
    try:
        saved = jsonlite.loads(data)
        if isinstance(saved, dict) and isinstance(saved.get("type"), str):
            return saved, data
    except ValueError:
        pass
    _warn(f"{path} is empty or corrupt; rebuilding the delegate config from subnet.env for DEL")
    try:
        env: SubnetEnv | None = load_subnet_env(fc.subnet_file)
    except CNIError:
        env = None
    d = build_delegate(fc, env)
    return d, go_json(d)


def cmd_del(args: CmdArgs, conf: NetConf) -> None:
    fc = load_conf(conf)
    loaded = _load_saved(fc, args)
    if loaded is None:
        remove_saved(fc, args.container_id)  # a temp file of an ADD killed mid-write
        return
    d, data = loaded
    delegate.run("DEL", d["type"], data, args)
    # Removed only once the delegate succeeded, so a retried DEL can finish the job
    # (the reference removes it even on failure and then leaks the pod's resources).
    remove_saved(fc, args.container_id)


def cmd_check(args: CmdArgs, conf: NetConf) -> None:
    fc = load_conf(conf)
    loaded = _load_saved(fc, args)
    if loaded is None:
        raise CNIError(INVALID_CONFIG, f"no saved delegate config for container {args.container_id} in "
                       f"{fc.data_dir}", "the pod was never added by flannel on this node; re-ADD it")
    d, _ = loaded
    if "prevResult" in conf.raw:
        d = dict(d, prevResult=conf.raw["prevResult"])
    delegate.run("CHECK", d["type"], go_json(d), args)


def _current_delegate(fc: FlannelConf) -> dict[str, Any]:
    try:
        env: SubnetEnv | None = load_subnet_env(fc.subnet_file)
    except CNIError:
        env = None
    return build_delegate(fc, env)


def cmd_gc(args: CmdArgs, conf: NetConf) -> None:
    fc = load_conf(conf)
    d = _current_delegate(fc)
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in conf.raw:
            d[key] = conf.raw[key]
    delegate.run("GC", d["type"], go_json(d), args)
    valid_ids = {cid for cid, _ in schemas.valid_attachments(conf.raw)}
    try:
        names = os.listdir(fc.data_dir)
    except FileNotFoundError:
        return
    for name in names:
        if name not in valid_ids and not name.startswith("."):
            remove_saved(fc, name)


def cmd_status(args: CmdArgs, conf: NetConf) -> None:
    fc = load_conf(conf)
    try:
        env = load_subnet_env(fc.subnet_file)
    except CNIError as err:
        raise CNIError(PLUGIN_NOT_AVAILABLE, err.msg, err.details) from None
    d = build_delegate(fc, env)
    delegate.run("STATUS", d["type"], go_json(d), args)


PLUGIN = Plugin(name="flannel", about="CNI flannel plugin (cni-flannel)", add=cmd_add, delete=cmd_del,
                check=cmd_check, gc=cmd_gc, status=cmd_status, schema=SCHEMA)
