#!/bin/bash
# Installs everything weft needs on Debian 12 (as root) and builds it: system packages, npm
# dependencies, the native addon and the TypeScript, and the real Kubernetes control plane the
# kube tests run (kube-apiserver, kubectl, etcd: built from the Go module proxy by
# scripts/build-kube.sh into /var/cache/weft/k8s, once per machine; needs Go 1.26 on PATH).
# Safe to run again; skips what is there.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

# podman, runc and busybox-static: the real-runtime test (test/cluster/podman.test.ts) runs
# Debian's podman 4.3 against the installed weft with an image imported from busybox.
# chromium: the web view's browser tests (test/cluster/ui-browser.test.ts, bench ui) drive Debian's Chromium through playwright-core.
PACKAGES=(iproute2 nftables etcd-server etcd-client iperf3 bird2 containernetworking-plugins
          python3 make g++ procps iputils-ping iptables util-linux curl openssl
          podman runc busybox-static chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's packages start services on some machines; weft's tests start their own etcd and
# BIRD on private ports and need no system-wide instance.

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
bash scripts/build.sh
# Several minutes on a fresh machine (Go's output goes to build.log beside the binaries), instant after.
kube_bin_dir=$(bash scripts/build-kube.sh)
echo "setup: Kubernetes binaries in $kube_bin_dir" >&2
echo "setup: done" >&2
