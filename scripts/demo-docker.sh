#!/usr/bin/env bash
# The Docker part of the demo, run INSIDE a gVisor sandbox by scripts/demo.sh
# (runsc --network=none --net-raw --platform=ptrace do ...): Debian sid's
# dockerd 28.5.2 started by `conductor-netd docker up`, then unchanged
# docker commands - two containers on a user-defined network reaching each
# other by name, and a stand-in internet (a namespace with an HTTP server)
# reached from a container - then `docker down`. Every step is printed as a
# user would type it. Everything lives in the sandbox and ends with it.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERD=${DOCKERD:-/opt/conductor-net/docker-28/usr/sbin/dockerd}
NETD=${CONDUCTOR_NETD_BIN:-/usr/local/bin/conductor-netd}

step() {
    printf '\n$ %s\n' "$*"
    "$@"
}
quiet() { "$@" >/dev/null 2>&1; }

echo "== inside gVisor ($(runsc --version 2>/dev/null | head -1 || echo runsc)): Docker 28 with conductor-net =="
ip link set lo up
# The sandbox's way out, for the demo: a namespace standing for the
# internet, behind a veth, with an HTTP server on 203.0.113.10.
quiet ip netns add internet
quiet ip link add uplink type veth peer name eth0 netns internet
ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up
ip -n internet addr add 198.51.100.2/24 dev eth0
ip -n internet addr add 203.0.113.10/24 dev eth0
ip -n internet link set eth0 up
ip route add default via 198.51.100.2 dev uplink
mkdir -p /tmp/internet && echo "hello from the internet" > /tmp/internet/index.html
ip netns exec internet busybox httpd -p 203.0.113.10:80 -h /tmp/internet
echo "(a stand-in internet: 203.0.113.10 serves HTTP behind the sandbox's uplink)"

step "$NETD" docker up --dockerd "$DOCKERD"
# A busybox image (no registry is reachable from here).
rootfs=$(mktemp -d)
mkdir -p "$rootfs/bin" "$rootfs/www"
cp /bin/busybox "$rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"; done
echo "hello from web" > "$rootfs/www/index.html"
printf '\n$ tar -C ROOTFS -c . | docker import - busybox:demo\n'
tar -C "$rootfs" -c . | docker import - busybox:demo
step docker network create demo
step docker run -d --name web --network demo --network-alias www busybox:demo httpd -f -p 80 -h /www
step docker run --rm --network demo busybox:demo wget -q -O- http://web/
step docker run --rm --network demo busybox:demo wget -q -O- http://www/
step docker run --rm --network demo busybox:demo wget -q -O- http://203.0.113.10/
step "$NETD" docker ls
step docker rm -f web
step docker network rm demo
step "$NETD" docker down
