#!/usr/bin/env bash
# Builds the real control-plane binaries the e2e tests run against
# (kube-apiserver, kubectl, etcd, helm) from their Go modules, and links them
# into <repo>/.tools/bin/.
#
# Why build from source: the machines this project runs on can reach the Go
# module proxy but not GitHub releases or other binary downloads, so upstream
# source via the proxy is the only way to get the genuine binaries.
#
# Why a cache outside the clone: CI and every session use a fresh clone, and
# building kube-apiserver on 2 cores takes many minutes. The binaries live in
# ${LVS_CACHE:-$HOME/.cache/lvs-operator}/tools/<name>-<version>-<key>/ so a
# second run (or a second clone on the same machine) only re-creates symlinks.
# <key> hashes the pinning go.mod/go.sum, the ldflags and the Go version, so a
# version bump (edit tests/e2e/tools/*/go.mod) builds into a new directory
# instead of silently reusing stale binaries.
#
# Usage: tests/e2e/tools.sh [all|kube|node|etcd|helm]...   (default: all; node: kubelet,
#        kube-controller-manager and kube-scheduler, which only make e2e-pods needs)
# Prints the bin directory on its last line of stdout.
# Env:   LVS_CACHE       cache root (default $HOME/.cache/lvs-operator)
#        GO              go binary (default: go on PATH, else /usr/local/go/bin/go)
#        E2E_BUILD_JOBS  parallel compile jobs (default 2, the machine has 2 cores)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
TOOLS_SRC="$HERE/tools"
CACHE_ROOT="${LVS_CACHE:-$HOME/.cache/lvs-operator}/tools"
BIN_DIR="$REPO_ROOT/.tools/bin"
JOBS="${E2E_BUILD_JOBS:-2}"

if [[ -z "${GO:-}" ]]; then
  if command -v go >/dev/null 2>&1; then GO="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else echo "tools.sh: no Go toolchain found (set GO=...)" >&2; exit 1; fi
fi

# Builds must be reproducible from the committed go.mod/go.sum alone:
# -mod=readonly fails loudly instead of quietly resolving new versions, and
# GOTOOLCHAIN=local stops go from fetching a different toolchain behind our back.
# CGO is off because upstream ships these binaries static too and it avoids
# needing a C toolchain. -trimpath keeps the cache key independent of paths.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath"

log() { echo "tools.sh: $*" >&2; }

# cache_key DIR LDFLAGS -> short hash that changes whenever anything that
# affects the output changes.
cache_key() {
  { cat "$1/go.mod" "$1/go.sum"; echo "$2"; "$GO" version; } | sha256sum | cut -c1-12
}

# mod_version DIR MODULE -> the version of MODULE selected by DIR's go.mod.
mod_version() {
  (cd "$1" && "$GO" list -m -f '{{.Version}}' "$2")
}

# build_tool NAME SRCDIR VERSION LDFLAGS [BIN=]PKG... : builds each PKG into
# the cache dir once (binary named BIN, else the last element of PKG), then
# links the binaries into .tools/bin.
build_tool() {
  local name="$1" src="$2" version="$3" ldflags="$4"; shift 4
  local key dest tmp pkg bin start
  key="$(cache_key "$src" "$ldflags")"
  dest="$CACHE_ROOT/$name-$version-$key"
  mkdir -p "$CACHE_ROOT" "$BIN_DIR"
  # Two clones (or a test run and a manual run) may call this at once; the
  # lock makes the second one wait and then find the finished build.
  exec {lockfd}>"$CACHE_ROOT/.$name.lock"
  flock "$lockfd"
  if [[ ! -f "$dest/.complete" ]]; then
    log "building $name $version (cache $dest); this takes a while the first time"
    start=$SECONDS
    # Build into a temp dir and rename: an interrupted build never leaves a
    # half-written binary that a later run would treat as cached.
    tmp="$(mktemp -d "$CACHE_ROOT/.$name-build.XXXXXX")"
    for pkg in "$@"; do
      bin="$(basename "${pkg%%=*}")"; pkg="${pkg#*=}"
      (cd "$src" && nice -n 10 "$GO" build -p "$JOBS" -ldflags "$ldflags" -o "$tmp/$bin" "$pkg")
    done
    chmod 755 "$tmp"  # mktemp makes it 0700
    touch "$tmp/.complete"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    log "built $name $version in $((SECONDS - start))s"
  fi
  flock -u "$lockfd"
  exec {lockfd}>&-
  for pkg in "$@"; do
    bin="$(basename "${pkg%%=*}")"
    ln -sfn "$dest/$bin" "$BIN_DIR/$bin"
  done
}

# kube_ldflags: upstream's version stamp for binaries of the k8s.io/kubernetes module.
kube_ldflags() {
  local src="$TOOLS_SRC/kubernetes" v major minor date ldflags p
  v="$(mod_version "$src" k8s.io/kubernetes)"           # e.g. v1.34.4
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  # Upstream's hack/lib/version.sh stamps the version into both packages:
  # component-base is what kube-apiserver reports on /version, client-go is
  # what kubectl prints as its client version. Without this both say v0.0.0.
  # The build date is the release tag's time, so the stamp is reproducible.
  date="$(cd "$src" && "$GO" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  echo "$ldflags"
}

build_kube() {
  local src="$TOOLS_SRC/kubernetes"
  build_tool kubernetes "$src" "$(mod_version "$src" k8s.io/kubernetes)" "$(kube_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
}

# The node side and the rest of the control plane, for the pods in the VM (make e2e-pods): the
# same k8s.io/kubernetes version as the API server, pinned by a go.mod of their own so that their
# larger dependency set never changes the API server's cache key.
build_node() {
  local src="$TOOLS_SRC/kubernetes-node" v
  v="$(mod_version "$src" k8s.io/kubernetes)"
  if [[ "$v" != "$(mod_version "$TOOLS_SRC/kubernetes" k8s.io/kubernetes)" ]]; then
    log "tools/kubernetes-node pins k8s.io/kubernetes $v, tools/kubernetes another version"
    exit 1
  fi
  build_tool kubernetes-node "$src" "$v" "$(kube_ldflags)" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
}

build_etcd() {
  local src="$TOOLS_SRC/etcd" v
  v="$(mod_version "$src" go.etcd.io/etcd/server/v3)"
  # etcd's version is a constant in go.etcd.io/etcd/api/v3/version, so no
  # stamping is needed.
  build_tool etcd "$src" "$v" "-s -w" etcd=.
}

build_helm() {
  local src="$TOOLS_SRC/helm" v kv kmaj kmin ldflags
  v="$(mod_version "$src" helm.sh/helm/v3)"
  # Helm's Makefile stamps its own version plus the Kubernetes version it
  # pretends to target (used for .Capabilities.KubeVersion in `helm template`);
  # take the latter from the client-go that helm's go.mod selects.
  kv="$(mod_version "$src" k8s.io/client-go)"             # e.g. v0.34.2
  kmaj=1; kmin="${kv#v0.}"; kmin="${kmin%%.*}"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$v"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$kmaj"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kmin"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kmaj"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kmin"
  build_tool helm "$src" "$v" "$ldflags" helm.sh/helm/v3/cmd/helm
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(all)
for t in "${targets[@]}"; do
  case "$t" in
    all)  build_etcd; build_kube; build_helm ;;
    kube|kubernetes) build_kube ;;
    node) build_node ;;
    etcd) build_etcd ;;
    helm) build_helm ;;
    *) echo "usage: $0 [all|kube|node|etcd|helm]..." >&2; exit 2 ;;
  esac
done

# .tools/ must never be committed (it only holds symlinks into this machine's
# cache); ignore it from inside so this works without a root .gitignore entry.
[[ -f "$REPO_ROOT/.tools/.gitignore" ]] || echo '*' > "$REPO_ROOT/.tools/.gitignore"

echo "$BIN_DIR"
