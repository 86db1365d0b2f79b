"""cni-flannel: the CNI plugins of a flannel node, in Python."""
__version__ = "0.1.0"
