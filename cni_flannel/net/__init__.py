"""The kernel layer: netns, links, addresses, routes, sysctl, iptables, nftables. No CNI knowledge."""
