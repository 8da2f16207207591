#!/usr/bin/env bash
# Builds the reference CNI "bridge" plugin from its Go module
# (github.com/containernetworking/plugins; no binary downloads reach this
# machine) into .cache/cni/<version>/ and prints that folder. It is the
# plugin Multus runs for netbridge's NetworkAttachmentDefinitions; the CNI
# tests invoke it exactly as Multus would. Rebuilt only when CNI_PLUGINS_VERSION
# changes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=/dev/null
source "$root/hack/versions.env"
out="$root/.cache/cni/${CNI_PLUGINS_VERSION}"
if [[ -x "$out/bridge" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "building CNI bridge plugin v${CNI_PLUGINS_VERSION}..." >&2
cd "$work"
cat > go.mod <<GOMOD
module netbridge.local/cni
go 1.26
require github.com/containernetworking/plugins v${CNI_PLUGINS_VERSION}
GOMOD
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/containernetworking/plugins/plugins/main/bridge"
GO
GOFLAGS=-mod=mod go mod tidy >&2
CGO_ENABLED=0 go build -trimpath -o "$out/bridge.tmp" \
  github.com/containernetworking/plugins/plugins/main/bridge >&2
mv "$out/bridge.tmp" "$out/bridge"
echo "$out"
