#!/usr/bin/env bash
# Debian sid's dockerd 28.5.2 (what users run today) beside bookworm's 20.10,
# without touching the system's apt sources: a private source list and
# private apt lists, `apt-get download`, `dpkg -x` into DEST. It runs on
# bookworm with bookworm's containerd and runc.
#   install-docker28.sh [DEST]   (default /opt/conductor-net/docker-28)
# Afterwards DEST/usr/sbin holds dockerd and docker-proxy: put that folder
# first on dockerd's PATH (conductor-netd docker up --dockerd DEST/usr/sbin/dockerd
# does that itself). Idempotent; run as root.
set -euo pipefail

VERSION=28.5.2+dfsg4-5
DEST=${1:-/opt/conductor-net/docker-28}

if [ -x "$DEST/usr/sbin/dockerd" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi

# The mirror this machine already uses (deb822 URIs: or a deb line).
mirror=$({ cat /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null || true; } \
    | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /tmp/docker28.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb ${mirror%/} sid main" > "$work/sid.list"
apt_private=(-o "Dir::Etc::sourcelist=$work/sid.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::archives=$work/archives"
    -o "APT::Get::List-Cleanup=0")
apt-get "${apt_private[@]}" update -qq
(cd "$work" && apt-get "${apt_private[@]}" download "docker.io=$VERSION")
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
dpkg -x "$work"/docker.io_*.deb "$DEST.tmp"
echo "$VERSION" > "$DEST.tmp/VERSION"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
"$DEST/usr/sbin/dockerd" --version
