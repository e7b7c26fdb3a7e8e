#!/usr/bin/env bash
# The README's main job: the cluster in a box. Installs what it needs, brings up a 4-node
# Calico cluster made of network namespaces (etcd, calico-felix, calico-confd + BIRD on each
# node, the seed's pool 10.244.0.0/16 with VXLAN), runs the seed's experiments with per-hop
# packet captures, and prints the report. The lab stays up: explore it with
# `calico-lab status`, `calico-lab exec client -- ping ...`, calicoctl (see `calico-lab env`),
# and remove every trace of it with `calico-lab down`. Needs root. PYCALICO_ENCAP=ipip on a
# kernel without the ipip module runs the demo in a VM instead (the lab goes with the VM).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
encap="${PYCALICO_ENCAP:-vxlan}"
bgp="${PYCALICO_BGP:-mesh}"
calico-lab down >/dev/null 2>&1 || true
case "$encap" in
  ipip*)
    if ! python3 -c "import sys; from lab.netns import kernel_supports; sys.exit(not kernel_supports('ipip'))"; then
      # No ipip module here: the whole demo runs in a VM on Debian's kernel (lab/vm.py).
      exec calico-lab demo --encap "$encap" --nodes 4 --bgp "$bgp"
    fi ;;
esac
calico-lab up --nodes 4 --encap "$encap" --bgp "$bgp"
calico-lab demo
echo
echo "The lab is still running: calico-lab status | calico-lab env | calico-lab down"
