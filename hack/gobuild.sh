#!/usr/bin/env bash
# Sourced by the hack/ scripts that build a tool from its Go module (no
# binary downloads reach this machine) into .cache/ instead of adding it to
# the project's go.mod.
#
# cached_go_build BIN MODULE VERSION PKG OUT [LDFLAGS]
#   builds package PKG of MODULE@vVERSION as OUT/BIN, unless OUT/BIN is
#   already there (OUT carries the version, so a new version rebuilds).
#   Progress goes to stderr; stdout is left to the caller.
cached_go_build() {
  local bin="$1" module="$2" version="$3" pkg="$4" out="$5" ldflags="${6:-}"
  if [[ -x "$out/$bin" ]]; then
    return 0
  fi
  mkdir -p "$out"
  echo "building $bin v$version from $module (minutes when cold)..." >&2
  (
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    cat > go.mod <<GOMOD
module netbridge.local/$bin
go 1.26
require $module v$version
GOMOD
    # A blank import of the main package makes tidy resolve everything it
    # needs.
    cat > tools.go <<GO
//go:build tools

package tools

import _ "$pkg"
GO
    GOFLAGS=-mod=mod go mod tidy >&2
    CGO_ENABLED=0 go build -trimpath -o "$out/$bin.tmp" -ldflags "$ldflags" "$pkg" >&2
    mv "$out/$bin.tmp" "$out/$bin"
  )
}
