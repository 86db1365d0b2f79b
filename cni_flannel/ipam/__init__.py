"""IPAM: host-local's range sets, its Go-compatible disk store and the allocator."""
