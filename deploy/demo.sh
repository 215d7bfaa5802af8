#!/usr/bin/env bash
# The main job: builds Sluice and runs `sluice demo` (two Sluice nodes, four
# TUN pods and an external host in network namespaces; ping, TCP and UDP
# between every pod and out through SNAT; a printed summary). Needs root.
# Everything it creates is removed when it ends, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root: sudo bash deploy/demo.sh" >&2
    exit 1
fi
packages=(iproute2 ethtool iputils-ping build-essential clang m4 libelf-dev zlib1g-dev
    pkg-config libpcap-dev linux-libc-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cargo build --release --locked -p dataplane --bin sluice
exec target/release/sluice demo
