#!/usr/bin/env bash
# Builds the helm binary from its Go module (no binary downloads reach this
# machine) into .cache/helm/<version>/ and prints its path. helm is kept out
# of the project's go.mod on purpose: it drags a huge dependency tree and
# would shift our k8s.io versions. Rebuilt only when HELM_VERSION changes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=/dev/null
source "$root/hack/versions.env"
# shellcheck source=hack/gobuild.sh
source "$root/hack/gobuild.sh"
out="$root/.cache/helm/${HELM_VERSION}"
cached_go_build helm helm.sh/helm/v3 "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm "$out" \
  "-X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION}"
echo "$out/helm"
