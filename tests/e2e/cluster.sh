#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver, nothing else) for
# the lvs-operator e2e tests, on loopback, with its own throw-away PKI.
#
# Usage: tests/e2e/cluster.sh start|stop|restart|status|env|apiserver-stop|apiserver-start
#   start    build/link the binaries if needed (tools.sh), generate certs once,
#            start etcd and kube-apiserver with a fresh etcd data dir, wait
#            for /readyz. Calling it while the cluster runs is a no-op.
#   stop     stop both processes (TERM, then KILL after a grace period). Safe
#            to call when nothing runs, or twice.
#   env      print `export KUBECONFIG=...` (and PATH for .tools/bin), for
#            eval "$(tests/e2e/cluster.sh env)".
#   apiserver-stop / apiserver-start
#            stop or start the apiserver alone, etcd and its data kept: an API
#            outage as a control-plane restart makes one.
#   controllers-start
#            also run kube-controller-manager and kube-scheduler (make e2e-pods);
#            stop stops them too.
#   node-kubeconfig NAME FILE
#            a kubelet's kubeconfig for the VM, as system:node:NAME.
#
# What is deliberately missing unless asked for (controllers-start, and the
# kubelets that make e2e-pods runs in the VM): kube-controller-manager, scheduler,
# kubelet. The apiserver itself creates the default/kube-system/kube-public
# /kube-node-lease namespaces and the bootstrap RBAC roles, but nothing
# creates per-namespace "default" ServiceAccounts, runs Deployments or
# garbage-collects. Tests create the objects they need. Note that the
# ServiceAccount admission plugin rejects a Pod whose ServiceAccount does not
# exist, so create it first.
#
# Networking: the apiserver binds 127.0.0.1 only. A qemu VM on user-mode
# networking reaches it as https://10.0.2.2:<port> because slirp turns the
# guest's connections to 10.0.2.2 into host connections to 127.0.0.1; the
# serving cert carries 10.0.2.2 as a SAN for that, and admin-vm.kubeconfig
# is written with that address.
#
# Env: E2E_STATE (default /tmp/lvs-e2e), E2E_APISERVER_PORT (16443),
#      E2E_ETCD_PORT (12379), E2E_ETCD_PEER_PORT (12380),
#      E2E_READY_TIMEOUT seconds (120), E2E_ADVERTISE_ADDRESS (unset: the
#      apiserver picks the default-route interface's address; it is only
#      written into the `kubernetes` EndpointSlice, and startup fails on a host
#      with no default route unless this is set to some non-loopback address).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
BIN_DIR="$REPO_ROOT/.tools/bin"
STATE="${E2E_STATE:-/tmp/lvs-e2e}"
API_PORT="${E2E_APISERVER_PORT:-16443}"
ETCD_PORT="${E2E_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${E2E_ETCD_PEER_PORT:-12380}"
READY_TIMEOUT="${E2E_READY_TIMEOUT:-120}"

PKI="$STATE/pki"
LOGS="$STATE/logs"
RUN="$STATE/run"
KUBECONFIG_FILE="$STATE/admin.kubeconfig"
API_URL="https://127.0.0.1:$API_PORT"
ETCD_URL="http://127.0.0.1:$ETCD_PORT"

log() { echo "cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- PKI ------

# gen_cert NAME SUBJECT EXTENSIONS : key + cert signed by our CA.
gen_cert() {
  local name="$1" subj="$2" ext="$3"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# Certificates are kept across start/stop (only etcd data is wiped) so that
# a VM image or a long-lived kubeconfig copy keeps trusting the same CA.
# Delete $E2E_STATE/pki to get new ones.
ensure_pki() {
  [[ -f "$PKI/.complete" ]] && return 0
  log "generating certificates in $PKI"
  rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -days 3650 -sha256 -subj "/CN=lvs-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # Every name a client may dial: loopback for host-side tests, 10.0.2.2 for
  # a qemu user-mode guest, and the in-cluster service IP/DNS names (first IP
  # of --service-cluster-ip-range) for code that uses in-cluster config.
  gen_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.2.2,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # O=system:masters is the group the apiserver hard-wires to full access,
  # independent of RBAC objects (which may not be bootstrapped yet).
  gen_cert admin "/O=system:masters/CN=lvs-e2e-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Service-account token signing pair; lets `kubectl create token` work.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
  touch "$PKI/.complete"
}

# write_kubeconfig FILE SERVER [CERT] : self-contained (certs inlined) so the file
# can be copied into a VM or container on its own; CERT names the client pair in $PKI (admin).
write_kubeconfig() {
  local b64="base64 -w0" cert=${3:-admin}
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lvs-e2e
  cluster:
    server: $2
    certificate-authority-data: $($b64 < "$PKI/ca.crt")
users:
- name: lvs-e2e-admin
  user:
    client-certificate-data: $($b64 < "$PKI/$cert.crt")
    client-key-data: $($b64 < "$PKI/$cert.key")
contexts:
- name: lvs-e2e
  context:
    cluster: lvs-e2e
    user: lvs-e2e-admin
current-context: lvs-e2e
EOF
  chmod 600 "$1"
}

# ------------------------------------------------------------ processes ----

# is_running NAME : pid file exists and that pid is still our binary (guards
# against a stale pid file whose pid was reused by something else).
is_running() {
  local pidf="$RUN/$1.pid" pid
  [[ -f "$pidf" ]] || return 1
  pid="$(cat "$pidf")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "/$1 "
}

stop_one() {
  local name="$1" pidf="$RUN/$1.pid" pid i
  if is_running "$name"; then
    pid="$(cat "$pidf")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      is_running "$name" || break
      sleep 0.2
    done
    if is_running "$name"; then
      log "$name did not exit after 20s, killing"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$pidf"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# launch NAME ARGS... : detached (own session, no stdin) so the process
# outlives this script and the caller's terminal; stdout+stderr to logs/.
# The pid file is written by the process itself (a shell that then execs the binary): setsid
# forks when it happens to lead its process group, and then $! would name a process long gone.
launch() {
  local name="$1"; shift
  rm -f "$RUN/$name.pid"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$BIN_DIR/$name" "$@" \
    </dev/null >>"$LOGS/$name.log" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s "$RUN/$name.pid" ]] && return 0; sleep 0.1; done
  die "$name did not start"
}

curl_api() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API_URL$1"
}

wait_for() { # NAME CHECK-COMMAND...
  local name="$1" deadline=$((SECONDS + READY_TIMEOUT)); shift
  until "$@" >/dev/null 2>&1; do
    is_running "$name" || { tail -n 30 "$LOGS/$name.log" >&2; die "$name exited; see $LOGS/$name.log"; }
    ((SECONDS < deadline)) || { tail -n 30 "$LOGS/$name.log" >&2; die "$name not ready after ${READY_TIMEOUT}s; see $LOGS/$name.log"; }
    sleep 0.5
  done
}

cmd_start() {
  if is_running etcd && is_running kube-apiserver; then
    log "already running"; print_usage; return 0
  fi
  # A half-up cluster (one process died) is restarted from scratch.
  cmd_stop
  "$HERE/tools.sh" kube etcd >/dev/null
  mkdir -p "$LOGS" "$RUN"
  local p
  for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
    port_free "$p" || die "port 127.0.0.1:$p is in use (set E2E_*_PORT to move it)"
  done
  ensure_pki
  write_kubeconfig "$KUBECONFIG_FILE" "$API_URL"
  write_kubeconfig "$STATE/admin-vm.kubeconfig" "https://10.0.2.2:$API_PORT"

  # Every start is a clean cluster: tests must not see a previous run's objects.
  rm -rf "$STATE/etcd"
  : > "$LOGS/etcd.log"; : > "$LOGS/kube-apiserver.log"
  # Plain HTTP on loopback: etcd is only ever talked to by the apiserver on
  # this host, and TLS here would test nothing we care about.
  # --unsafe-no-fsync: the data is thrown away anyway, and fsync on a shared
  # CI disk makes apiserver writes (and thus tests) slow and flaky.
  log "starting etcd on $ETCD_URL"
  launch etcd \
    --name=lvs-e2e \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="$ETCD_URL" \
    --advertise-client-urls="$ETCD_URL" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="lvs-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync
  wait_for etcd curl -fsS --max-time 2 "$ETCD_URL/health"

  start_apiserver
  log "ready: $("$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" version 2>/dev/null | tr '\n' ' ')"
  print_usage
}

# The apiserver alone, on the running etcd: `apiserver-start` after `apiserver-stop` is an API
# outage with nothing lost, as a user sees when the control plane restarts.
start_apiserver() {
  log "starting kube-apiserver on $API_URL"
  # Node,RBAC is what real clusters run, so RBAC mistakes in the operator's
  # manifests show up here. The issuer is the conventional in-cluster URL;
  # its only job here is to be stable, since tokens name it.
  launch kube-apiserver \
    --bind-address=127.0.0.1 \
    --secure-port="$API_PORT" \
    --etcd-servers="$ETCD_URL" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --kubelet-client-certificate="$PKI/admin.crt" \
    --kubelet-client-key="$PKI/admin.key" \
    --profiling=false \
    ${E2E_ADVERTISE_ADDRESS:+--advertise-address="$E2E_ADVERTISE_ADDRESS"} \
    --v=1
  wait_for kube-apiserver curl_api /readyz
}

# The rest of a control plane, for the pods of make e2e-pods: the controllers (Deployments,
# DaemonSets, the kube-root-ca.crt ConfigMap every pod's token volume needs, node lifecycle)
# and the scheduler, on this host next to the API server, as the admin, without serving ports.
cmd_controllers_start() {
  is_running kube-apiserver || die "kube-apiserver is not running"
  "$HERE/tools.sh" node >/dev/null
  if ! is_running kube-controller-manager; then
    : > "$LOGS/kube-controller-manager.log"
    log "starting kube-controller-manager"
    launch kube-controller-manager \
      --kubeconfig="$KUBECONFIG_FILE" \
      --secure-port=0 \
      --leader-elect=false \
      --root-ca-file="$PKI/ca.crt" \
      --service-account-private-key-file="$PKI/sa.key" \
      --use-service-account-credentials=false \
      --v=1
  fi
  if ! is_running kube-scheduler; then
    : > "$LOGS/kube-scheduler.log"
    log "starting kube-scheduler"
    launch kube-scheduler --kubeconfig="$KUBECONFIG_FILE" --secure-port=0 --leader-elect=false --v=1
  fi
}

# node-kubeconfig NAME FILE : a kubelet's identity (system:node:NAME in system:nodes, so the Node
# authorizer and NodeRestriction apply), as a kubeconfig for the VM (https://10.0.2.2:PORT).
cmd_node_kubeconfig() {
  local name=$1 file=$2
  ensure_pki
  [[ -f "$PKI/node-$name.crt" ]] || gen_cert "node-$name" "/O=system:nodes/CN=system:node:$name" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  chmod 600 "$PKI"/*.key
  write_kubeconfig "$file" "https://10.0.2.2:$API_PORT" "node-$name"
}

cmd_stop() {
  stop_one kube-scheduler
  stop_one kube-controller-manager
  # apiserver first, so it does not spend its shutdown retrying a dead etcd.
  stop_one kube-apiserver
  stop_one etcd
}

print_usage() {
  cat >&2 <<EOF
cluster.sh: kube-apiserver at $API_URL (logs in $LOGS)
  eval "\$($0 env)"        # KUBECONFIG + PATH with kubectl/helm
  kubectl --kubeconfig $KUBECONFIG_FILE get ns
  VM (qemu user-mode net): $STATE/admin-vm.kubeconfig  (server https://10.0.2.2:$API_PORT)
EOF
}

cmd_env() {
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
  echo "export PATH=$BIN_DIR:\$PATH"
}

cmd_status() {
  local n
  for n in etcd kube-apiserver; do
    if is_running "$n"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; fi
  done
  is_running kube-apiserver && curl_api /readyz && echo
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  apiserver-stop) stop_one kube-apiserver ;;
  apiserver-start) is_running etcd || die "etcd is not running"; is_running kube-apiserver || start_apiserver ;;
  controllers-start) cmd_controllers_start ;;
  node-kubeconfig) [[ $# == 3 ]] || die "usage: $0 node-kubeconfig NAME FILE"; cmd_node_kubeconfig "$2" "$3" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 start|stop|restart|status|env|apiserver-stop|apiserver-start|controllers-start|node-kubeconfig" >&2; exit 2 ;;
esac
