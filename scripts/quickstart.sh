#!/usr/bin/env bash
# The README's main job: the cluster in a box. Installs what it needs, brings up a 4-node
# Calico cluster made of network namespaces (etcd, calico-felix, calico-confd + BIRD on each
# node, the seed's pool 10.244.0.0/16 with VXLAN), runs the seed's experiments with per-hop
# packet captures, and prints the report. The lab stays up: explore it with
# `calico-lab status`, `calico-lab exec client -- ping ...`, calicoctl (see `calico-lab env`),
# and remove every trace of it with `calico-lab down`. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
encap="${PYCALICO_ENCAP:-vxlan}"
bgp="${PYCALICO_BGP:-mesh}"
calico-lab down >/dev/null 2>&1 || true
calico-lab up --nodes 4 --encap "$encap" --bgp "$bgp"
calico-lab demo
echo
echo "The lab is still running: calico-lab status | calico-lab env | calico-lab down"
