"""Subnet managers: where a node's lease and its peers' leases come from (etcd or the Kubernetes API)."""
