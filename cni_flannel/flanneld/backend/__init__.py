"""Backends: the data plane for the own lease and the peers (vxlan, host-gw, udp)."""
