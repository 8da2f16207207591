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
# shellcheck source=hack/gobuild.sh
source "$root/hack/gobuild.sh"
out="$root/.cache/cni/${CNI_PLUGINS_VERSION}"
cached_go_build bridge github.com/containernetworking/plugins "${CNI_PLUGINS_VERSION}" \
  github.com/containernetworking/plugins/plugins/main/bridge "$out"
echo "$out"
