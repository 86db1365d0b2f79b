"""One module per CNI plugin, each exposing ``PLUGIN`` (a cni.skel.Plugin)."""
