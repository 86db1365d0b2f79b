"""The CNI protocol layer: the spec, with no kernel code. Standard library only."""
