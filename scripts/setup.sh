#!/usr/bin/env bash
# Installs, idempotently, the Debian packages tenguard uses, and the `tenguard` command on
# PATH. Safe to run again: it only calls apt when a command is missing. Needs root (as the lab
# itself does).
set -euo pipefail
cd "$(dirname "$0")/.."

# The `tenguard` command: a shim in $TENGUARD_BIN_DIR (default /usr/local/bin) that runs this
# checkout's bin/tenguard.js with this node. Never `npx tenguard`: npx installs the checkout
# as a package, which runs its install script (a rebuild of the native addon) in the checkout.
# A file there that is not our shim is left alone.
install_shim() {
  local dir="${TENGUARD_BIN_DIR:-/usr/local/bin}" node shim
  shim="$dir/tenguard"
  node="$(command -v node)"
  if [ -e "$shim" ] && ! grep -q '^# tenguard shim (scripts/setup.sh)' "$shim" 2>/dev/null; then
    echo "setup: $shim exists and is not tenguard's shim; left alone" >&2
    return 0
  fi
  if ! mkdir -p "$dir" 2>/dev/null || [ ! -w "$dir" ]; then
    echo "setup: cannot write $dir; the tenguard command is node $PWD/bin/tenguard.js" >&2
    return 0
  fi
  printf '#!/bin/sh\n# tenguard shim (scripts/setup.sh): runs %s/bin/tenguard.js; it never builds anything.\nexec %s %s/bin/tenguard.js "$@"\n' \
    "$PWD" "$node" "$PWD" >"$shim.tmp.$$"
  chmod 755 "$shim.tmp.$$"
  mv -f "$shim.tmp.$$" "$shim"
}
install_shim

# command -> Debian package that provides it
declare -A NEED=(
  [ip]=iproute2
  [iperf3]=iperf3
  [wireguard-go]=wireguard-go
  [wg]=wireguard-tools
  [tcpdump]=tcpdump
  [tshark]=tshark
  [softhsm2-util]=softhsm2
  [ping]=iputils-ping
  [pgrep]=procps
  [nft]=nftables
  [openssl]=openssl
  [podman]=podman
  [runc]=runc
  [etcd]=etcd-server
  [chromium]=chromium
  [promtool]=prometheus
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
[ -e /usr/lib/softhsm/libsofthsm2.so ] || missing+=(softhsm2)
# A static busybox for the rootfs of the podman image the CNI demo imports (no registry).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || missing+=(busybox-static)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi

mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "setup: installing Debian packages: ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "setup: done" >&2
