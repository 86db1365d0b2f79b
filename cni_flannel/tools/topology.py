"""Lab topology in network namespaces: nodes joined by an underlay and flannel's vxlan.

This plays flanneld's part for the demo and the tests: it builds ``flannel.1``
(VNI 1, UDP 8472) with the routes, neighbours and FDB entries flanneld's vxlan
backend programs, and writes each node's subnet.env. It only touches the
namespaces it creates (all named with the given prefix).
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import uuid

from ..records import field, record


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


@record
class Node:
    name: str
    netns: str
    underlay_ip: str
    subnet: str  # e.g. 10.42.1.0/24
    subnet_env: str
    vtep_mac: str = ""
    pods: list[str] = field(default_factory=list)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


@record
class Lab:
    prefix: str
    network: str
    nodes: list[Node] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def new_netns(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")
        return name

    def destroy(self) -> None:
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "delete", ns, check=False)
        self.namespaces.clear()


def write_subnet_env(path: str, network: str, subnet: str, mtu: int = 1450, ipmasq: bool = True) -> None:
    """flanneld's WriteSubnetFile: FLANNEL_SUBNET is the first usable address."""
    net = ipaddress.ip_network(subnet)
    first = f"{net.network_address + 1}/{net.prefixlen}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={first}\nFLANNEL_MTU={mtu}\n"
                f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}\n")
    os.replace(tmp, path)


def build(state_dir: str, count: int = 2, network: str = "10.42.0.0/16", prefix: str | None = None) -> Lab:
    """``count`` nodes on one underlay switch, each with flannel.1 and its subnet.env."""
    lab = Lab(prefix=prefix or f"cnif{uuid.uuid4().hex[:6]}", network=network)
    try:
        switch = lab.new_netns("underlay")
        sh("ip", "-n", switch, "link", "add", "sw0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "sw0", "up")
        base = ipaddress.ip_network(network)
        for i in range(1, count + 1):
            ns = lab.new_netns(f"node{i}")
            subnet = str(list(base.subnets(new_prefix=24))[i])
            underlay = f"192.168.77.{i}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"n{i}", "netns", switch)
            sh("ip", "-n", switch, "link", "set", f"n{i}", "master", "sw0", "up")
            in_ns(ns, "ip", "addr", "add", f"{underlay}/24", "dev", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")
            in_ns(ns, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", underlay,
                  "dev", "eth0", "dstport", "8472", "nolearning")
            in_ns(ns, "ip", "link", "set", "flannel.1", "mtu", "1450", "up")
            in_ns(ns, "ip", "addr", "add", f"{ipaddress.ip_network(subnet).network_address}/32", "dev", "flannel.1")
            in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            mac = json.loads(in_ns(ns, "ip", "-j", "link", "show", "flannel.1").stdout)[0]["address"]
            env = os.path.join(state_dir, f"node{i}", "subnet.env")
            write_subnet_env(env, network, subnet)
            lab.nodes.append(Node(name=f"node{i}", netns=ns, underlay_ip=underlay, subnet=subnet,
                                  subnet_env=env, vtep_mac=mac))
        for a in lab.nodes:
            for b in lab.nodes:
                if a is b:
                    continue
                gw = str(ipaddress.ip_network(b.subnet).network_address)
                in_ns(a.netns, "ip", "route", "add", b.subnet, "via", gw, "dev", "flannel.1", "onlink")
                in_ns(a.netns, "ip", "neigh", "replace", gw, "lladdr", b.vtep_mac, "dev", "flannel.1",
                      "nud", "permanent")
                in_ns(a.netns, "bridge", "fdb", "append", b.vtep_mac, "dev", "flannel.1", "dst", b.underlay_ip)
    except BaseException:
        lab.destroy()
        raise
    return lab


@record
class Host:
    name: str
    netns: str
    ip: str
    segment: int  # 77 or 78: the underlay L2 segment (192.168.<segment>.0/24)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


def build_underlay(names: list[tuple[str, int]], prefix: str) -> tuple[Lab, list[Host]]:
    """Hosts on two L2 segments routed by the switch namespace, with nothing of flannel on them.

    ``names`` holds (name, segment) pairs, segment 77 or 78. A host on the other segment is
    reachable only through the router: flanneld's DirectRouting then falls back to vxlan.
    """
    lab = Lab(prefix=prefix, network="")
    hosts: list[Host] = []
    try:
        switch = lab.new_netns("underlay")
        in_ns(switch, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for seg in (77, 78):
            sh("ip", "-n", switch, "link", "add", f"sw{seg}", "type", "bridge")
            sh("ip", "-n", switch, "addr", "add", f"192.168.{seg}.254/24", "dev", f"sw{seg}")
            sh("ip", "-n", switch, "link", "set", f"sw{seg}", "up")
        counters = {77: 0, 78: 0}
        for name, seg in names:
            counters[seg] += 1
            ns = lab.new_netns(name)
            ip = f"192.168.{seg}.{counters[seg]}"
            port = f"{name[:6]}{counters[seg]}{seg}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", switch)
            sh("ip", "-n", switch, "link", "set", port, "master", f"sw{seg}", "up")
            in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            in_ns(ns, "ip", "link", "set", "eth0", "up")
            in_ns(ns, "ip", "route", "add", "default", "via", f"192.168.{seg}.254")
            in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            hosts.append(Host(name=name, netns=ns, ip=ip, segment=seg))
    except BaseException:
        lab.destroy()
        raise
    return lab, hosts
