"""The runtime side of CNI, as libcni does it (cni-reference §1.4, §1.5, §1.8).

Loads network configuration lists, derives each plugin's request config,
chains prevResult on ADD, caches the final result, runs DEL in reverse, and
implements CHECK, GC and STATUS with libcni's version gating.
"""
from __future__ import annotations

import base64
import glob
import json
import os
from typing import Any

from ..cni import version as cniversion
from ..cni.env import CmdArgs, validate_container_id, validate_ifname
from ..cni.errors import CNIError
from ..cni.result import Result
from ..delegate import exec_plugin, find_in_path
from ..records import field, record

DEFAULT_CACHE_DIR = "/var/lib/cni"


class LibcniError(Exception):
    """A runtime failure, printed as libcni prints it."""


@record
class PluginConf:
    raw: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.raw.get("type", ""))

    def capabilities(self) -> dict[str, bool]:
        caps = self.raw.get("capabilities")
        return caps if isinstance(caps, dict) else {}


@record
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: list[PluginConf]
    bytes: bytes
    disable_check: bool = False
    disable_gc: bool = False


@record
class RuntimeConf:
    container_id: str
    netns: str
    ifname: str
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    if value is None:
        return False
    raise LibcniError(f"error parsing {key}: invalid value {value!r}")


def select_version(raw: dict[str, Any]) -> str:
    """cniVersions: drop versions newer than ours, add cniVersion, pick the highest."""
    candidates = []
    for v in raw.get("cniVersions") or []:
        try:
            cniversion.parse(v)
        except CNIError:
            raise LibcniError(f"failed to parse version {v!r} in cniVersions") from None
        if cniversion.at_least(cniversion.CURRENT, v):
            candidates.append(v)
    if isinstance(raw.get("cniVersion"), str) and raw["cniVersion"]:
        if cniversion.at_least(cniversion.CURRENT, raw["cniVersion"]):
            candidates.append(raw["cniVersion"])
    if not candidates:
        return str(raw.get("cniVersion") or "")
    return max(candidates, key=cniversion.parse)


def conf_list_from_bytes(data: bytes, source: str = "") -> NetworkConfigList:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise LibcniError(f"error parsing configuration list {source}: {exc}") from None
    if not isinstance(raw, dict):
        raise LibcniError(f"error parsing configuration list {source}: not an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise LibcniError(f"error parsing configuration list {source}: no name")
    plugins = raw.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise LibcniError(f"error parsing configuration list {source}: no plugins in list")
    return NetworkConfigList(name=name, cni_version=select_version(raw),
                             plugins=[PluginConf(p) for p in plugins], bytes=data,
                             disable_check=_bool(raw.get("disableCheck"), "disableCheck"),
                             disable_gc=_bool(raw.get("disableGC"), "disableGC"))


def conf_list_from_conf(data: bytes) -> NetworkConfigList:
    """ConfListFromConf: a single .conf becomes a list of one plugin."""
    raw = json.loads(data)
    listed = {"name": raw.get("name"), "cniVersion": raw.get("cniVersion", ""), "plugins": [raw]}
    return conf_list_from_bytes(json.dumps(listed).encode())


def load_network(conf_dir: str, name: str) -> NetworkConfigList:
    """LoadNetworkConf: .conflist files first (sorted), then single .conf/.json configs."""
    for path in sorted(glob.glob(os.path.join(conf_dir, "*.conflist"))):
        with open(path, "rb") as f:
            data = f.read()
        try:
            if json.loads(data).get("name") == name:
                return conf_list_from_bytes(data, path)
        except (ValueError, AttributeError):
            continue
    singles = sorted(glob.glob(os.path.join(conf_dir, "*.conf")) + glob.glob(os.path.join(conf_dir, "*.json")))
    for path in singles:
        with open(path, "rb") as f:
            data = f.read()
        try:
            if json.loads(data).get("name") == name:
                return conf_list_from_conf(data)
        except (ValueError, AttributeError):
            continue
    raise LibcniError(f'no net configuration with name "{name}" in {conf_dir}')


def request_config(net: NetworkConfigList, plugin: PluginConf, rt: RuntimeConf,
                   prev: dict[str, Any] | None) -> bytes:
    """buildOneConfig + injectRuntimeConfig."""
    conf = dict(plugin.raw)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    if prev is not None:
        conf["prevResult"] = prev
    rc = {cap: rt.capability_args[cap] for cap, on in plugin.capabilities().items()
          if on and cap in rt.capability_args}
    if rc:
        conf["runtimeConfig"] = rc
    return json.dumps(conf, sort_keys=True).encode()


class CNI:
    def __init__(self, path: list[str], cache_dir: str = DEFAULT_CACHE_DIR) -> None:
        self.path = path
        self.cache_dir = cache_dir

    # -- invocation -----------------------------------------------------------------------------
    def _args(self, rt: RuntimeConf, verb: str) -> CmdArgs:
        return CmdArgs(command=verb, container_id=rt.container_id, netns=rt.netns, ifname=rt.ifname,
                       args=";".join(f"{k}={v}" for k, v in rt.args), path=self.path)

    def _exec(self, verb: str, plugin: PluginConf, conf: bytes, rt: RuntimeConf) -> Result | None:
        try:
            binary = find_in_path(plugin.type, self.path)
            return exec_plugin(verb, binary, conf, self._args(rt, verb))
        except CNIError as err:
            inner = err.msg.split("): ", 1)[1] if err.msg.startswith("plugin ") and "): " in err.msg else err.msg
            text = f"{inner}; {err.details}" if err.details else inner
            raise LibcniError(f'plugin type="{plugin.type}" failed ({verb.lower()}): {text}') from None

    # -- cache ----------------------------------------------------------------------------------
    def cache_path(self, net: str, rt: RuntimeConf) -> str:
        return os.path.join(self.cache_dir, "results", f"{net}-{rt.container_id}-{rt.ifname}")

    def cache_result(self, net: NetworkConfigList, rt: RuntimeConf, result: dict[str, Any]) -> None:
        entry = {"kind": "cniCacheV1", "containerId": rt.container_id,
                 "config": base64.b64encode(net.bytes).decode(), "ifName": rt.ifname, "networkName": net.name,
                 "netns": rt.netns, "cniArgs": [list(p) for p in rt.args] or None,
                 "capabilityArgs": rt.capability_args or None, "result": result}
        entry = {k: v for k, v in entry.items() if v is not None}
        path = self.cache_path(net.name, rt)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        from ..ipam.store import write_atomic

        write_atomic(path, json.dumps(entry).encode(), 0o600)

    def cached(self, net: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any] | None:
        try:
            with open(self.cache_path(net.name, rt), "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return None
        if isinstance(data, dict) and data.get("kind") == "cniCacheV1":
            res = data.get("result")
            return res if isinstance(res, dict) else None
        return data if isinstance(data, dict) else None  # legacy: the raw result

    def cached_attachments(self, net_name: str) -> list[dict[str, Any]]:
        out = []
        for path in glob.glob(os.path.join(self.cache_dir, "results", f"{net_name}-*")):
            try:
                with open(path, "rb") as f:
                    data = json.loads(f.read())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("kind") == "cniCacheV1" and data.get("networkName") == net_name:
                out.append(data)
        return out

    def remove_cache(self, net: str, rt: RuntimeConf) -> None:
        try:
            os.unlink(self.cache_path(net, rt))
        except FileNotFoundError:
            pass

    # -- verbs ----------------------------------------------------------------------------------
    def add(self, net: NetworkConfigList, rt: RuntimeConf) -> Result | None:
        for check, value in ((validate_container_id, rt.container_id), (validate_ifname, rt.ifname)):
            try:
                check(value)
            except CNIError as err:
                raise LibcniError(err.msg) from None
        prev: dict[str, Any] | None = None
        result: Result | None = None
        for plugin in net.plugins:
            result = self._exec("ADD", plugin, request_config(net, plugin, rt, prev), rt)
            if result is not None:
                prev = result.to_dict(net.cni_version)
        if prev is not None:
            self.cache_result(net, rt, prev)
        return result

    def check(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        if not cniversion.at_least(net.cni_version or "0.1.0", "0.4.0"):
            raise LibcniError(f'configuration version "{net.cni_version}" does not support the CHECK command')
        if net.disable_check:
            return
        cached = self.cached(net, rt)
        if cached is None:
            raise LibcniError(f'failed to get network "{net.name}" cached result: no cached result')
        for plugin in net.plugins:
            self._exec("CHECK", plugin, request_config(net, plugin, rt, cached), rt)

    def delete(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        prev = self.cached(net, rt) if cniversion.at_least(net.cni_version or "0.1.0", "0.4.0") else None
        for plugin in reversed(net.plugins):
            self._exec("DEL", plugin, request_config(net, plugin, rt, prev), rt)
        self.remove_cache(net.name, rt)

    def gc(self, net: NetworkConfigList, valid: list[dict[str, str]]) -> None:
        if net.disable_gc:
            return
        keep = {(a.get("containerID"), a.get("ifname")) for a in valid}
        errors = []
        for entry in self.cached_attachments(net.name):
            if (entry.get("containerId"), entry.get("ifName")) in keep:
                continue
            rt = RuntimeConf(container_id=entry["containerId"], netns=entry.get("netns", ""),
                             ifname=entry["ifName"], args=[tuple(p) for p in entry.get("cniArgs") or []],
                             capability_args=entry.get("capabilityArgs") or {})
            try:
                cached_net = conf_list_from_bytes(base64.b64decode(entry["config"]))
                self.delete(cached_net, rt)
            except (LibcniError, KeyError, ValueError) as exc:
                errors.append(str(exc))
        if cniversion.at_least(net.cni_version or "0.1.0", "1.1.0"):
            rt = RuntimeConf(container_id="", netns="", ifname="")
            for plugin in net.plugins:
                conf = json.loads(request_config(net, plugin, rt, None))
                conf["cni.dev/valid-attachments"] = valid
                conf["cni.dev/attachments"] = valid
                try:
                    self._exec("GC", plugin, json.dumps(conf, sort_keys=True).encode(), rt)
                except LibcniError as exc:
                    errors.append(str(exc))
        if errors:
            raise LibcniError("; ".join(errors))

    def status(self, net: NetworkConfigList) -> None:
        if not cniversion.at_least(net.cni_version or "0.1.0", "1.1.0"):
            return
        rt = RuntimeConf(container_id="", netns="", ifname="")
        for plugin in net.plugins:
            self._exec("STATUS", plugin, request_config(net, plugin, rt, None), rt)
