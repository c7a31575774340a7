# Sourced by the suites (sh and bash). WGET_3_TRIES runs inside a container
# as `sh -c "$WGET_3_TRIES" URL`: it fetches URL; a connection reset (a
# gVisor quirk, docs/gvisor-quirks.md) is tried again, up to 3 tries, each
# failed try printed on stderr; any other error (a name that does not
# resolve, a refusal) ends it at once.
# shellcheck disable=SC2016 # expanded inside the container, not here
WGET_3_TRIES='for t in 1 2 3; do timeout 10 wget -q -O- "$0" 2>/tmp/e && exit 0; echo "try $t: $(cat /tmp/e)" >&2; grep -q "reset by peer" /tmp/e || exit 1; sleep 1; done; exit 1'
