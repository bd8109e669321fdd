#!/usr/bin/env bash
# A private Docker daemon for the container tests, and the way back.
#
#   docker/ci/dockerd.sh start   # prints: export DOCKER_HOST=unix://...
#   docker/ci/dockerd.sh stop
#
# Everything it keeps lives under $POSTSERVICE_DOCKER_DIR (default
# /tmp/postservice-docker): images, so the base images are built once and
# reused, plus the socket, the pid file and the host state found before the
# start. dockerd adds a docker0 bridge, DOCKER* iptables chains, a FORWARD
# DROP policy and turns on IP forwarding; `stop` stops the daemon by its PID
# and undoes each of those.
set -euo pipefail

DIR=${POSTSERVICE_DOCKER_DIR:-/tmp/postservice-docker}
SOCKET="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
STATE="$DIR/host-state"
DOCKER=/usr/bin/docker

answers() { DOCKER_HOST="unix://$SOCKET" "$DOCKER" version >/dev/null 2>&1; }

bridges() { ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | sort; }

start() {
    mkdir -p "$DIR/data" "$DIR/exec"
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && answers; then
        echo "export DOCKER_HOST=unix://$SOCKET"
        return
    fi
    {
        echo "forward_policy=$(iptables -S FORWARD | awk '$1 == "-P" {print $3}')"
        echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"
        echo "bridges=$(bridges | tr '\n' ' ')"
    } >"$STATE"
    dockerd --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$PIDFILE" \
        --host "unix://$SOCKET" >"$DIR/dockerd.log" 2>&1 &
    local deadline=$((SECONDS + 60))
    until answers; do
        if ((SECONDS >= deadline)) || ! kill -0 $! 2>/dev/null; then
            echo "dockerd did not start; see $DIR/dockerd.log:" >&2
            tail -20 "$DIR/dockerd.log" >&2
            stop >&2
            return 1
        fi
        sleep 0.5
    done
    echo "export DOCKER_HOST=unix://$SOCKET"
}

delete_docker_chains() {  # delete_docker_chains TABLE
    local table=$1 chain
    # First the rules Docker added to the built-in chains: jumps to its own
    # chains, and those for its bridges (docker0, br-<network>).
    # grep finding nothing is not a failure here (pipefail would make it one).
    iptables -t "$table" -S | { grep -E '^-A [A-Z]+ ' || true; } | { grep -vE '^-A DOCKER' || true; } |
        { grep -E -- '-j DOCKER|docker0|br-[0-9a-f]{12}' || true; } |
        while read -r _ rule; do
            # shellcheck disable=SC2086  # the rule is a list of words
            iptables -t "$table" -D $rule || true
        done
    for chain in $(iptables -t "$table" -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
        iptables -t "$table" -F "$chain" || true
    done
    for chain in $(iptables -t "$table" -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
        iptables -t "$table" -X "$chain" || true
    done
}

stop() {
    if [ -f "$PIDFILE" ]; then
        local pid
        pid=$(cat "$PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$PIDFILE"
    fi
    if [ ! -f "$STATE" ]; then
        return  # never started here: nothing to put back
    fi
    local forward_policy ip_forward before
    forward_policy=$(sed -n 's/^forward_policy=//p' "$STATE")
    ip_forward=$(sed -n 's/^ip_forward=//p' "$STATE")
    before=$(sed -n 's/^bridges=//p' "$STATE")
    delete_docker_chains filter
    delete_docker_chains nat
    iptables -P FORWARD "${forward_policy:-ACCEPT}"
    echo "${ip_forward:-0}" >/proc/sys/net/ipv4/ip_forward
    local bridge
    for bridge in $(bridges); do
        case " $before " in *" $bridge "*) continue ;; esac
        case "$bridge" in docker0 | br-*) ip link delete "$bridge" || true ;; esac
    done
    rm -f "$STATE" "$SOCKET"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
