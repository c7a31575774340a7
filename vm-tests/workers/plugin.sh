# Sourced by vm-tests/workers/run.sh: Docker's network plugin (netd serves
# it on $PLUGIN_SOCK, a private /run/docker/plugins). Rows: a network made
# by `docker network create -d conductor` is a conductor network; two
# containers on it reach each other and the sandbox by address; the
# conductor IPAM driver; an existing conductor network used by Docker;
# removal leaves no veth and no network; malformed plugin requests.
plugin_call() { # plugin_call PATH BODY: "STATUS BODY"
    curl -s --max-time 10 --unix-socket "$PLUGIN_SOCK" -o "$T/plugin.out" -w '%{http_code}' \
        -H 'Content-Type: application/json' -d "$2" "http://plugin$1"
    echo " $(cat "$T/plugin.out")"
}
ip_in() { d inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1" 2>/dev/null; }
host_links() { ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort; }
plugin_rows() {
    local links_before id ip ipb got
    links_before=$(host_links)
    if ! d network create -d conductor --subnet 10.215.0.0/24 ${P}pn > "$T/pn.id" 2> "$T/pn.err"; then
        fail plugin-network-create "$(tr '\n' ' ' < "$T/pn.err")"
        return
    fi
    id=$(cut -c1-12 "$T/pn.id")
    expect plugin-network-in-netd "$(n --json network ls | jq -r '.[] | select(.name=="docker-'"$id"'") | .subnet')" 10.215.0.0/24
    d run -d --name ${P}pa --network ${P}pn bb httpd -f -p 80 -h /www >/dev/null 2>"$T/pa.err" \
        || fail plugin-run "$(tr '\n' ' ' < "$T/pa.err")"
    ip=$(ip_in ${P}pa ${P}pn)
    expect plugin-address "$(addr_of ${P}pa)|$(echo "$ip" | cut -d. -f1-3)" "$ip|10.215.0"
    # (gVisor reports no bridge master: the host end is counted; that it is
    # on the bridge shows in the rows that reach the container)
    expect plugin-veth-made "$(ip -o link show | grep -c ': cp')" 1
    expect plugin-sandbox-to-container "$(busybox timeout 5 wget -q -O- http://$ip/ 2>&1)" hello-from-parent
    got=$(d run --rm --network ${P}pn bb sh -c "timeout 5 wget -q -O- http://$ip/" 2>&1)
    expect plugin-container-to-container "$got" hello-from-parent
    # The conductor IPAM driver: a subnet from netd's pool.
    if d network create -d conductor --ipam-driver conductor ${P}pi >/dev/null 2>"$T/pi.err"; then
        d run -d --name ${P}pb --network ${P}pi bb httpd -f -p 80 -h /www >/dev/null 2>&1
        ipb=$(ip_in ${P}pb ${P}pi)
        got=$(d run --rm --network ${P}pi bb sh -c "timeout 5 wget -q -O- http://$ipb/" 2>&1)
        expect plugin-ipam "$(addr_of ${P}pb)|$got" "$ipb|hello-from-parent"
    else
        fail plugin-ipam "$(tr '\n' ' ' < "$T/pi.err")"
    fi
    # A network made with the API, used by Docker.
    n network create ${P}cn2 --subnet 10.216.0.0/24 >/dev/null
    d network create -d conductor --subnet 10.216.0.0/24 -o conductor.network=${P}cn2 ${P}pad >/dev/null 2>"$T/pad.err" \
        || fail plugin-adopt "$(tr '\n' ' ' < "$T/pad.err")"
    d run -d --name ${P}pc --network ${P}pad bb httpd -f -p 80 -h /www >/dev/null 2>&1
    ip=$(ip_in ${P}pc ${P}pad)
    expect plugin-adopt "$(echo "$ip" | cut -d. -f1-3)|$(busybox timeout 5 wget -q -O- http://$ip/ 2>&1)" "10.216.0|hello-from-parent"
    # Bad input: a subnet that is not the adopted network's; malformed JSON.
    got=$(d network create -d conductor --subnet 10.217.0.0/24 -o conductor.network=${P}cn2 ${P}pbad 2>&1)
    expect plugin-adopt-wrong-subnet "$(echo "$got" | grep -c "10.216.0.0/24")|$(d network ls -q --filter name=${P}pbad | wc -l)" "1|0"
    got=$(plugin_call /NetworkDriver.CreateNetwork '{"NetworkID": ')
    expect plugin-malformed-json "$(echo "$got" | cut -c1-3)|$(echo "$got" | grep -c '"Err"')" "400|1"
    got=$(plugin_call /NetworkDriver.Join '{"NetworkID":"0123456789ab","EndpointID":"0123456789ab","SandboxKey":"/nonexistent"}')
    expect plugin-unknown-endpoint "$(echo "$got" | cut -c1-3)" 404
    # Removal: no veth, no network left; the adopted network stays.
    d rm -f ${P}pa ${P}pb ${P}pc >/dev/null 2>&1
    d network rm ${P}pn ${P}pi ${P}pad >/dev/null 2>&1
    got=$(n --json network ls | jq -r '.[] | select(.name=="'${P}cn2'") | .subnet')
    n network rm ${P}cn2 >/dev/null
    expect plugin-nothing-left "$(comm -13 <(echo "$links_before") <(host_links) | tr '\n' ' ')|$(n --json network ls | jq -r '[.[] | select(.name | startswith("docker-"))] | length')|$got" "|0|10.216.0.0/24"
}
