#!/bin/sh
# Start a node of docker-compose.galera.yml: its health check for the proxy
# (docker/galera-check.sh, on port 9200), then the image's own entrypoint, with
# --wsrep-new-cluster only when this node may start the cluster, so that a
# node restarted while the others run joins them again instead of refusing
# to start (or, worse, starting a second cluster of its own).
#
# A node starts the cluster when
# - its grastate.dat says safe_to_bootstrap: 1: it was the last node of the
#   cluster to stop, so it holds every commit and no other node can be
#   running (a whole cluster stopped with `docker compose stop` or `down`);
# - or GALERA_FIRST_NODE is 1, it has no state at all and no other node of
#   the cluster is running: the first start of a new cluster.
# Every other start joins the nodes in wsrep_cluster_address.
set -eu
state=/var/lib/mysql/grastate.dat

others_running() {  # a peer's name resolves only while its container runs
    for peer in ${GALERA_PEERS:-}; do
        getent hosts "$peer" >/dev/null && return 0
    done
    return 1
}

if [ -f "$state" ]; then
    if grep -Eq '^safe_to_bootstrap:[[:space:]]*1' "$state"; then
        echo "galera-node: this node stopped last; starting the cluster"
        set -- "$@" --wsrep-new-cluster
    fi
elif [ "${GALERA_FIRST_NODE:-0}" = 1 ] && ! others_running; then
    echo "galera-node: no state and no other node; starting a new cluster"
    set -- "$@" --wsrep-new-cluster
fi
# The node's health for the proxy in front of the nodes (docker/galera-check.sh),
# answered from now on: "not synced" until the server has joined.
socat TCP-LISTEN:9200,reuseaddr,fork "EXEC:sh /usr/local/bin/galera-check.sh" &
exec docker-entrypoint.sh "$@"
