#!/usr/bin/env bash
# Installs the Debian packages the tests use: FRR (the real BGP peer),
# iproute2, QEMU + busybox (802.1Q under a full kernel), tcpdump/arping for
# debugging. Idempotent and quiet when everything is there.
set -euo pipefail
pkgs=(frr bird2 iproute2 qemu-system-x86 busybox-static tcpdump arping iputils-ping procps iperf3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
