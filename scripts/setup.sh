#!/usr/bin/env bash
# Installs, idempotently, the Debian packages tenguard uses. Safe to run again: it only
# calls apt when a command is missing. Needs root (as the lab itself does).
set -euo pipefail

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
