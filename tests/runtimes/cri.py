"""A small CRI client (runtime.v1) for the containerd tests: raw gRPC calls with a hand-written
protobuf codec for the few messages we need. No generated stubs, no protoc.

Field numbers follow k8s.io/cri-api pkg/apis/runtime/v1/api.proto.
"""
from __future__ import annotations

from typing import Any

import grpc

SERVICE = "/runtime.v1.RuntimeService/"
PROTOCOLS = {"tcp": 0, "udp": 1, "sctp": 2}


# -- protobuf wire format -----------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_varint(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value) if value else b""


def field_bytes(num: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def field_map(num: int, mapping: dict[str, str]) -> bytes:
    return b"".join(field_bytes(num, field_bytes(1, k) + field_bytes(2, v)) for k, v in mapping.items())


def decode(data: bytes) -> dict[int, list[Any]]:
    """Fields by number; length-delimited values stay bytes (decode nested ones again)."""
    out: dict[int, list[Any]] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _read_varint(data, i)
        elif wt == 2:
            n, i = _read_varint(data, i)
            val, i = data[i:i + n], i + n
        elif wt == 1:
            val, i = data[i:i + 8], i + 8
        elif wt == 5:
            val, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(val)
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


# -- the calls ----------------------------------------------------------------------------------

class CRI:
    def __init__(self, socket_path: str) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.created: list[str] = []

    def call(self, method: str, request: bytes, timeout: float = 120) -> dict[int, list[Any]]:
        fn = self.channel.unary_unary(SERVICE + method)
        return decode(fn(request, timeout=timeout))

    def version(self) -> str:
        r = self.call("Version", field_bytes(1, "v1"), timeout=5)
        return r[2][0].decode() + " " + r[3][0].decode()

    def run_pod_sandbox(self, name: str, uid: str, port_mappings: list[dict[str, Any]]) -> str:
        metadata = field_bytes(1, name) + field_bytes(2, uid) + field_bytes(3, "default") + field_varint(4, 0)
        ports = b"".join(field_bytes(5, field_varint(1, PROTOCOLS[p["protocol"]]) + field_varint(2, p["container_port"])
                                     + field_varint(3, p["host_port"]) + (field_bytes(4, p["host_ip"])
                                                                          if p.get("host_ip") else b""))
                         for p in port_mappings)
        namespace_option = b""  # NamespaceOption with network = POD (0, the default)
        linux = field_bytes(2, field_bytes(1, namespace_option))  # security_context.namespace_options
        config = (field_bytes(1, metadata) + field_bytes(2, name) + ports + field_map(6, {"app": name})
                  + field_bytes(8, linux))
        sid = self.call("RunPodSandbox", field_bytes(1, config))[1][0].decode()
        self.created.append(sid)
        return sid

    def pod_ip(self, sandbox_id: str) -> str:
        status = decode(self.call("PodSandboxStatus", field_bytes(1, sandbox_id))[1][0])
        network = decode(status[5][0]) if 5 in status else {}
        return network[1][0].decode() if 1 in network else ""

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", field_bytes(1, sandbox_id))

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("RemovePodSandbox", field_bytes(1, sandbox_id))

    def close(self) -> None:
        self.channel.close()
