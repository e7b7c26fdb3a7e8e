#!/usr/bin/env bash
# Installs what pycalico needs on a fresh Debian machine: the real etcd and
# BIRD, kernel tools, kubectl, what builds the image (podman, mmdebstrap), Prometheus
# (promtool and the server, for deploy/observability), the project itself with its
# test extras, and kubemock (the tests' mock Kubernetes API server).
# Used by .ci/run and by scripts/quickstart.sh (the README's two commands).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=0
for bin in etcd etcdctl bird nft ip tcpdump ping openssl podman mmdebstrap promtool prometheus; do
  command -v "$bin" >/dev/null 2>&1 || need_apt=1
done
# kubectl: Debian's kubernetes-client, unless some kubectl is already installed (its files would clash).
kubectl_pkg=""
command -v kubectl >/dev/null 2>&1 || { need_apt=1; kubectl_pkg=kubernetes-client; }
if [ "$need_apt" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    etcd-server etcd-client bird nftables iproute2 tcpdump iputils-ping openssl \
    podman mmdebstrap prometheus $kubectl_pkg >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,lab]'  # lab: matplotlib (calico-lab dashboards --png)
# The mock Kubernetes API server of the tests and of `calico-lab up --datastore kubernetes`: a
# distribution of its own (kubemock/pyproject.toml), kept out of the pycalico wheel.
python3 -m pip install -q --disable-pip-version-check -e ./kubemock

# The kernel_vm tier (IPIP for real): where this kernel cannot make an ipip link, the IPIP
# tests and `calico-lab demo --encap ipip` run in a virtme-ng VM on Debian's kernel, whose
# modules include ipip. Nothing of this is installed where the kernel has ipip.
ipip_probe() {
  local ns="pcprobe$$" ok=1
  ip netns add "$ns" 2>/dev/null || return 1
  ip netns exec "$ns" ip link add probe0 type ipip remote 192.0.2.1 >/dev/null 2>&1 && ok=0
  ip netns del "$ns" 2>/dev/null || true
  return "$ok"
}
if ! ipip_probe; then
  if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! ls /lib/modules/*/kernel/net/ipv4/ipip.ko* >/dev/null 2>&1 \
      || ! command -v busybox >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq qemu-system-x86 linux-image-amd64 busybox-static >/dev/null
  fi
  command -v vng >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check virtme-ng
fi
