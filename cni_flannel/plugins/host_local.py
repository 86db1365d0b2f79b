"""The host-local IPAM plugin binary: a thin shell around ipam.host_local."""
from __future__ import annotations

from ..cni import schemas
from ..cni.conf import NetConf
from ..cni.env import CmdArgs
from ..cni.result import Result
from ..cni.skel import Plugin
from ..ipam import host_local as hl

SCHEMA = schemas.netconf({"ipam": schemas.IPAM_HOST_LOCAL}, required=["ipam"],
                         runtime_config={"ipRanges": {"items": {"items": schemas.POOL_KEYS}}, "ips": {}},
                         cni_args={"ips": {}})
ARGS_KNOWN = ("IP",)  # IPAMArgs in Go: everything else needs IgnoreUnknown


def _data_dir(conf: NetConf) -> str:
    ipam = conf.raw.get("ipam") or {}
    return str(ipam.get("dataDir") or hl.DEFAULT_DATA_DIR)


def cmd_add(args: CmdArgs, conf: NetConf) -> Result:
    cfg = hl.load_config(conf.raw, args.cni_args(ARGS_KNOWN))
    return hl.allocate(cfg, args.container_id, args.ifname)


def cmd_del(args: CmdArgs, conf: NetConf) -> None:
    # Unlike Go, DEL needs only dataDir and name: a config that no longer validates
    # (edited ranges) must not strand the reservations.
    hl.release(_data_dir(conf), conf.name, args.container_id, args.ifname)


def cmd_check(args: CmdArgs, conf: NetConf) -> None:
    hl.load_config(conf.raw, args.cni_args(ARGS_KNOWN))
    hl.check(_data_dir(conf), conf.name, args.container_id, args.ifname)


def cmd_gc(args: CmdArgs, conf: NetConf) -> None:
    hl.gc(_data_dir(conf), conf.name, schemas.valid_attachments(conf.raw))


def cmd_status(args: CmdArgs, conf: NetConf) -> None:
    hl.status(_data_dir(conf), conf.name)


PLUGIN = Plugin(name="host-local", about="CNI host-local plugin (cni-flannel)", add=cmd_add, delete=cmd_del,
                check=cmd_check, gc=cmd_gc, status=cmd_status, schema=SCHEMA)
