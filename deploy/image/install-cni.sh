#!/bin/sh
# install-cni: calico-node's init container. Puts the calico and calico-ipam CNI plugins on the
# host, writes the network config list and the plugins' kubeconfig, as Calico's install does.
#
# Calico's plugins are static Go binaries; ours are Python, and the host (a kind node) has no
# Python. So this copies the image's interpreter, its standard library, the installed packages
# and the shared libraries they load (all but glibc's, which every Debian host has) to
# /opt/cni/pycalico on the host, and puts two small wrappers in /opt/cni/bin that run them.
#
# Environment (Calico's names): CNI_CONF_NAME (10-calico.conflist), CNI_NETWORK_CONFIG (the
# conflist, with __KUBECONFIG_FILEPATH__, __CNI_MTU__ and __KUBERNETES_NODE_NAME__ filled in),
# CNI_MTU (1480), KUBERNETES_NODE_NAME, KUBERNETES_SERVICE_HOST / _PORT (set by the kubelet).
# Ours: CNI_TOKEN_DIR (token and ca.crt of the plugins' service account; default the pod's own),
# CNI_HOST_ROOT (where the host's filesystem is mounted; /host).
set -eu

HOST=${CNI_HOST_ROOT:-/host}
RUNTIME=/opt/cni/pycalico           # the path on the host; the wrappers name it
BIN_DIR=$HOST/opt/cni/bin
NET_DIR=$HOST/etc/cni/net.d
CONF_NAME=${CNI_CONF_NAME:-10-calico.conflist}
MTU=${CNI_MTU:-1480}
TOKEN_DIR=${CNI_TOKEN_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}
VENV=/opt/pycalico

say() { echo "install-cni: $*" >&2; }
die() { say "$*"; exit 1; }

[ -d "$HOST" ] || die "$HOST is not mounted (the host's filesystem)"
[ -n "${CNI_NETWORK_CONFIG:-}" ] || die "CNI_NETWORK_CONFIG is not set"
[ -n "${KUBERNETES_NODE_NAME:-}" ] || die "KUBERNETES_NODE_NAME is not set"

# --- the runtime: staged beside the old one, then swapped, so a plugin never runs half a copy ---
PY=$(readlink -f "$VENV/bin/python3")
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
STAGE=$HOST$RUNTIME.new
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/lib" "$BIN_DIR" "$NET_DIR"
cp "$PY" "$STAGE/bin/python3"
cp -a "/usr/lib/python$PYVER" "$STAGE/lib/python$PYVER"
rm -rf "$STAGE/lib/python$PYVER/test" "$STAGE/lib/python$PYVER/config-"*
cp -a "$VENV/lib/python$PYVER/site-packages" "$STAGE/site-packages"
# Shared libraries of the interpreter and every extension module, less glibc's own.
find "$STAGE" -type f \( -name '*.so' -o -name '*.so.*' -o -path '*/bin/python3' \) -print \
  | while read -r f; do ldd "$f" 2>/dev/null || true; done \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
  | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|libutil|ld-linux[^/]*)\.so' \
  | while read -r lib; do cp -L "$lib" "$STAGE/lib/"; done
rm -rf "$HOST$RUNTIME.old"
[ ! -e "$HOST$RUNTIME" ] || mv "$HOST$RUNTIME" "$HOST$RUNTIME.old"
mv "$STAGE" "$HOST$RUNTIME"
rm -rf "$HOST$RUNTIME.old"

# --- the plugins: one wrapper each, written beside and renamed into place ---
for plugin in calico:calico_main calico-ipam:ipam_main; do
  name=${plugin%%:*}
  fn=${plugin#*:}
  cat >"$BIN_DIR/.$name.tmp" <<EOF
#!/bin/sh
# pycalico's $name CNI plugin (installed by calico-node's install-cni).
PYTHONHOME=$RUNTIME PYTHONPATH=$RUNTIME/site-packages LD_LIBRARY_PATH=$RUNTIME/lib \\
  exec $RUNTIME/bin/python3 -s -B -c 'import sys; from cni.main import $fn; sys.exit($fn())'
EOF
  chmod 755 "$BIN_DIR/.$name.tmp"
  mv "$BIN_DIR/.$name.tmp" "$BIN_DIR/$name"
  say "installed $BIN_DIR/$name"
done

# --- the plugins' kubeconfig, from the service account's token ---
KUBECONFIG_PATH=/etc/cni/net.d/calico-kubeconfig
i=0
while [ ! -s "$TOKEN_DIR/token" ]; do   # a token Secret is filled in by the token controller
  i=$((i + 1))
  [ "$i" -le 60 ] || die "no service account token in $TOKEN_DIR after 60 s"
  sleep 1
done
[ -n "${KUBERNETES_SERVICE_HOST:-}" ] || die "KUBERNETES_SERVICE_HOST is not set"
CA=$(base64 -w0 <"$TOKEN_DIR/ca.crt")
umask 077
cat >"$NET_DIR/.calico-kubeconfig.tmp" <<EOF
# Kubeconfig file for the Calico CNI plugins (written by install-cni).
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT:-443}
    certificate-authority-data: ${CA}
users:
- name: calico
  user:
    token: $(cat "$TOKEN_DIR/token")
contexts:
- name: calico-context
  context:
    cluster: local
    user: calico
current-context: calico-context
EOF
mv "$NET_DIR/.calico-kubeconfig.tmp" "$HOST$KUBECONFIG_PATH"
umask 022

# --- the network config list ---
printf '%s\n' "$CNI_NETWORK_CONFIG" \
  | sed -e "s|__KUBECONFIG_FILEPATH__|$KUBECONFIG_PATH|g" -e "s|__CNI_MTU__|$MTU|g" \
        -e "s|__KUBERNETES_NODE_NAME__|$KUBERNETES_NODE_NAME|g" >"$NET_DIR/.$CONF_NAME.tmp"
"$VENV/bin/python3" -c 'import json, sys; json.load(open(sys.argv[1]))' "$NET_DIR/.$CONF_NAME.tmp" \
  || die "CNI_NETWORK_CONFIG is not JSON once filled in"
mv "$NET_DIR/.$CONF_NAME.tmp" "$NET_DIR/$CONF_NAME"
say "wrote $NET_DIR/$CONF_NAME and $HOST$KUBECONFIG_PATH"
