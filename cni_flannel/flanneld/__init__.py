"""flanneld: the node agent (subnet lease, backend device, peer routes, masquerade, subnet.env)."""
