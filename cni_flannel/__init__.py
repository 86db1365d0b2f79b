"""cni-flannel: the CNI plugins of a flannel node, in Python."""
import os

__version__ = "0.1.0"
# The warm worker's socket (cni_flannel.runtime.worker); here so that a plugin exec can look for it
# without importing the client.
WORKER_SOCKET = "/run/cni-flannel/worker.sock"


def worker_socket_path() -> str:
    return os.environ.get("CNI_FLANNEL_WORKER_SOCKET") or WORKER_SOCKET
