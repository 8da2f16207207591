#!/usr/bin/env bash
# Builds the helm binary from its Go module (no binary downloads reach this
# machine) into .cache/helm/<version>/ and prints its path. helm is kept out
# of the project's go.mod on purpose: it drags a huge dependency tree and
# would shift our k8s.io versions. Rebuilt only when HELM_VERSION changes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=/dev/null
source "$root/hack/versions.env"
out="$root/.cache/helm/${HELM_VERSION}"
if [[ -x "$out/helm" ]]; then
  echo "$out/helm"
  exit 0
fi
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "building helm v${HELM_VERSION} (a few minutes cold)..." >&2
cd "$work"
cat > go.mod <<GOMOD
module netbridge.local/helm
go 1.26
require helm.sh/helm/v3 v${HELM_VERSION}
GOMOD
# helm's main package lives in cmd/helm; a blank-import file makes tidy
# resolve everything that package needs.
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
GOFLAGS=-mod=mod go mod tidy >&2
CGO_ENABLED=0 go build -trimpath -o "$out/helm.tmp" \
  -ldflags "-X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION}" \
  helm.sh/helm/v3/cmd/helm >&2
mv "$out/helm.tmp" "$out/helm"
echo "$out/helm"
