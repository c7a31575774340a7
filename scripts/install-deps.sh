#!/usr/bin/env bash
# Installs every Debian package conductor-net's build, tests and demo need,
# including runsc (gVisor) from bookworm-backports. Idempotent; run as root.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# bookworm-backports, on the mirror this machine already uses.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # URIs: (deb822) and deb lines only: comments may name other mirrors.
    # grep exits 2 for a missing file, which pipefail would make fatal.
    mirror=$({ cat /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null || true; } \
        | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "deb ${mirror%/} bookworm-backports main" > /etc/apt/sources.list.d/conductor-backports.list
fi

apt-get update
apt-get install -y --no-install-recommends \
    ca-certificates iproute2 iptables nftables busybox-static util-linux procps jq \
    containernetworking-plugins docker.io \
    golang-go golang-github-vishvananda-netlink-dev \
    build-essential pkg-config \
    tinyproxy openssl curl dnsmasq-base \
    chromium chromium-driver passt
# passt (pasta): the published-ports benchmark's third forwarder.
# chromium + chromium-driver: the ports suite's browser test (headless,
# through chromedriver) of the *.localhost proxy.
# dnsmasq-base, not dnsmasq: the latter also enables a system service that
# takes port 53 on every interface (dnsmasq is the DNS engine benchmark's
# comparison and the tests' stand-in upstream). tinyproxy is the egress
# suites' upstream CONNECT proxy, started by the suites inside their own
# namespaces: its system service is not wanted.
if [ -d /run/systemd/system ]; then
    systemctl disable --now tinyproxy >/dev/null 2>&1 || true
else
    invoke-rc.d tinyproxy stop >/dev/null 2>&1 || true
    update-rc.d tinyproxy disable >/dev/null 2>&1 || true
fi
apt-get install -y --no-install-recommends -t bookworm-backports runsc
# Debian sid's dockerd 28.5.2, privately beside bookworm's 20.10.
"$(dirname "$0")/install-docker28.sh"

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "cargo is in $HOME/.cargo/bin: add it to PATH" >&2
    else
        echo "conductor-net needs Rust >= 1.88 with cargo (rustup); Debian bookworm's rustc is too old" >&2
    fi
    exit 1
fi
