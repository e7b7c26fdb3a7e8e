#!/usr/bin/env bash
# The README's main job (until the cluster-in-a-box lands): start a real etcd
# on loopback, apply the seed's default pool with calicoctl, and show it the
# way the seed shows it. Leaves etcd running in the background and prints how
# to point calicoctl at it and how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

run_dir="${PYCALICO_RUN_DIR:-/tmp/pycalico-quickstart}"
port="${PYCALICO_ETCD_PORT:-23799}"
mkdir -p "$run_dir"
if [ -f "$run_dir/etcd.pid" ] && kill -0 "$(cat "$run_dir/etcd.pid")" 2>/dev/null; then
  echo "==> etcd already running (pid $(cat "$run_dir/etcd.pid"))"
else
  echo "==> starting etcd on 127.0.0.1:$port (data in $run_dir)"
  etcd --name quickstart --data-dir "$run_dir/data" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$((port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "quickstart=http://127.0.0.1:$((port + 1))" --log-level error \
    >"$run_dir/etcd.log" 2>&1 &
  echo $! >"$run_dir/etcd.pid"
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
export DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS="http://127.0.0.1:$port"
echo "==> calicoctl apply -f examples/ippool.yaml"
calicoctl apply -f examples/ippool.yaml
echo "==> calicoctl get ippool -o wide"
calicoctl get ippool -o wide
echo
echo "calicoctl is configured by: export DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS=$ETCD_ENDPOINTS"
echo "stop etcd with:             kill \$(cat $run_dir/etcd.pid)"
