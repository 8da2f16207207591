#!/usr/bin/env bash
# Prepares a Debian kernel with 802.1Q for the QEMU guests (vlan/qemutest,
# e2e/trunk; see internal/qemuguest) and prints the folder holding it:
#   vmlinuz             the kernel
#   modules/NAME.ko     the modules the test loads, uncompressed
# Cached in .cache/kernel/<package>/<hash of the module list>/: a change of
# DEBIAN_KERNEL_PKG in hack/versions.env or of the module list below makes
# a new folder (two lists never overwrite each other's). Installs qemu-system-x86 when it is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=/dev/null
source "$root/hack/versions.env"

# Load order matters (dependencies first: the guest has no modprobe); the
# guest reads this list. nf_tables carries the expressions the kernel fence
# (bridge family) and the BFD guard (inet family) use: meta, cmp, payload,
# lookup, counter; libcrc32c needs crc32c_generic loaded before it. e1000
# is the NIC of the trunk HA guest's link to the host (QEMU user network).
modules=(llc stp garp mrp 8021q bridge udp_tunnel ip6_udp_tunnel vxlan veth
  crc32c_generic libcrc32c nfnetlink nf_tables nft_meta_bridge e1000)
key="$(printf '%s\n' "${modules[@]}" | sha256sum | cut -c1-12)"
out="$root/.cache/kernel/${DEBIAN_KERNEL_PKG}/${key}"

if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "installing qemu-system-x86..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >&2; }
fi

if [[ -f "$out/vmlinuz" && -f "$out/modules/order" ]]; then
  echo "$out"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "downloading ${DEBIAN_KERNEL_PKG}..." >&2
apt-get download "$DEBIAN_KERNEL_PKG" >&2 || { apt-get update >&2 && apt-get download "$DEBIAN_KERNEL_PKG" >&2; }
dpkg -x ./*.deb x
rm -rf "$out.tmp"
mkdir -p "$out.tmp/modules"
cp x/boot/vmlinuz-* "$out.tmp/vmlinuz"
for m in "${modules[@]}"; do
  f="$(find x/lib/modules -name "$m.ko" -o -name "$m.ko.xz" | head -n 1)"
  [[ -n "$f" ]] || { echo "module $m not found in $DEBIAN_KERNEL_PKG" >&2; exit 1; }
  case "$f" in
    *.xz) xz -dc "$f" > "$out.tmp/modules/$m.ko" ;;
    *) cp "$f" "$out.tmp/modules/$m.ko" ;;
  esac
done
printf '%s\n' "${modules[@]}" > "$out.tmp/modules/order"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
