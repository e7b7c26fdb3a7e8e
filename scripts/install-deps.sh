#!/usr/bin/env bash
# Installs what pycalico needs on a fresh Debian machine: the real etcd and
# BIRD, kernel tools, and the project itself with its test extras.
# Used by .ci/run and by scripts/quickstart.sh (the README's two commands).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=0
for bin in etcd etcdctl bird nft ip tcpdump ping openssl; do
  command -v "$bin" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    etcd-server etcd-client bird nftables iproute2 tcpdump iputils-ping openssl >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
