#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd from Go modules (no binary downloads
# reach this machine) into .cache/testenv/<versions>/ and prints that folder.
# Rebuilt only when a pinned version in hack/versions.env changes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=/dev/null
source "$root/hack/versions.env"
out="$root/.cache/testenv/k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}"
if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client cri-streaming csi-translation-lib
  dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
  kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver streaming)
minor="0.${KUBE_VERSION#1.}"

if [[ ! -x "$out/kube-apiserver" ]]; then
  echo "building kube-apiserver v${KUBE_VERSION} (about 4 minutes cold)..." >&2
  mkdir -p "$work/apiserver"
  cd "$work/apiserver"
  {
    echo "module netbridge.local/kubeapiserver"
    echo "go 1.26"
    echo "require k8s.io/kubernetes v${KUBE_VERSION}"
    for m in "${staging[@]}"; do echo "replace k8s.io/$m => k8s.io/$m v${minor}"; done
  } > go.mod
  cat > main.go <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
  GOFLAGS=-mod=mod go mod tidy >&2
  CGO_ENABLED=0 go build -o "$out/kube-apiserver.tmp" . >&2
  mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
fi

if [[ ! -x "$out/etcd" ]]; then
  echo "building etcd v${ETCD_VERSION}..." >&2
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  cat > go.mod <<GOMOD
module netbridge.local/etcd
go 1.26
require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}
GOMOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  GOFLAGS=-mod=mod go mod tidy >&2
  CGO_ENABLED=0 go build -o "$out/etcd.tmp" . >&2
  mv "$out/etcd.tmp" "$out/etcd"
fi
echo "$out"
