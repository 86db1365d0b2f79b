#!/bin/sh
# The install-cni container's entry point: the bundle carries its own installer.
#   init mode (default): install the plugins and the conflist, then exit
#   sidecar mode:        install, then re-install when the ConfigMap changes; exits on SIGTERM
exec /opt/cni-flannel/cni-flannel install-cni --source /opt/cni-flannel "$@"
