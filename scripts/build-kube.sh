#!/bin/bash
# Builds a real kube-apiserver, kubectl and a matching etcd from the Go module proxy, once per
# machine, into /var/cache/weft/k8s/<version>/ (outside the checkout; GOMODCACHE and GOCACHE stay
# in Go's defaults under $HOME, also outside). k8s.io/kubernetes requires its ~30 staging modules
# at v0.0.0 through `replace => ./staging/...`, which do not apply to a dependent module, so a
# small module of our own pins each staging module to the release matching the Kubernetes
# version (1.X.Y <-> v0.X.Y) — the names are read from kubernetes' own go.mod.
# etcd comes from the same module graph (kubernetes depends on go.etcd.io/etcd/server/v3), so
# the server is one the API server was released against; Debian's 3.4 is too old for it.
# Go's own chatter (go: downloading …, compiler output) goes to build.log in the cache directory;
# on failure its tail is printed. Prints the directory holding the binaries on stdout.
set -euo pipefail
K8S_VERSION="${WEFT_K8S_VERSION:-v1.37.2}"
CACHE="${WEFT_K8S_CACHE:-/var/cache/weft/k8s}/$K8S_VERSION"
BINS=(kube-apiserver kubectl etcd)

# The Kubernetes binaries must carry their release (a build without the -X stamps below reports
# v0.0.0-master to kubectl and /version): one that does not is rebuilt.
have_all() {
  for b in "${BINS[@]}"; do [ -x "$CACHE/$b" ] || return 1; done
  [ "$("$CACHE/kube-apiserver" --version 2>/dev/null)" = "Kubernetes $K8S_VERSION" ] || return 1
  "$CACHE/kubectl" version --client -o json 2>/dev/null | grep -q "\"gitVersion\": \"$K8S_VERSION\"" || return 1
}
if have_all; then echo "$CACHE"; exit 0; fi

command -v go >/dev/null || { echo "build-kube: Go is needed (go1.26 or newer)" >&2; exit 1; }
staging_version="v0.${K8S_VERSION#v1.}"
work="$CACHE/src"
mkdir -p "$work"
cd "$work"
log="$CACHE/build.log"
: > "$log"
trap 'echo "build-kube: failed; the end of $log:" >&2; tail -n 40 "$log" >&2' ERR
echo "build-kube: building Kubernetes $K8S_VERSION (staging $staging_version) in $work — several minutes; log in $log" >&2
# -json reports a failure in its "Error" field on stdout, not on stderr.
download=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>>"$log") || true
gomod_file=$(printf '%s\n' "$download" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
[ -f "$gomod_file" ] || {
  echo "build-kube: cannot download k8s.io/kubernetes@$K8S_VERSION: $(printf '%s\n' "$download" | sed -n 's/.*"Error": "\(.*\)".*/\1/p')" >&2
  exit 1
}
go_directive=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod_file" | head -1)
{
  echo "module weft.local/kubebuild"
  echo
  echo "go ${go_directive:-1.25.0}"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/k8s\.io/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod_file"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package kubebuild

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
# Resolve the graph with kubernetes' own pins; -e keeps going past test-only modules.
GOFLAGS=-mod=mod go mod tidy -e >>"$log" 2>&1 || true
export CGO_ENABLED=0
# What Kubernetes' own hack/lib/version.sh stamps, in both places the binaries read it from.
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
stamps=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamps+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamps+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
go build -trimpath -ldflags="-s -w$stamps" -o "$CACHE/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >>"$log" 2>&1
go build -trimpath -ldflags="-s -w$stamps" -o "$CACHE/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl >>"$log" 2>&1
go build -trimpath -ldflags="-s -w" -o "$CACHE/etcd.tmp" go.etcd.io/etcd/server/v3 >>"$log" 2>&1
for b in "${BINS[@]}"; do mv -f "$CACHE/$b.tmp" "$CACHE/$b"; done
echo "build-kube: done" >&2
echo "$CACHE"
