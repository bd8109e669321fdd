#!/bin/sh
# The health of this Galera node over HTTP, for the proxy of
# docker-compose.galera.yml (haproxy's httpchk on port 9200): 200 while the
# node is a synced member of the primary component (wsrep_local_state 4,
# as healthcheck.sh --galera_online checks), 503 otherwise. socat runs one
# of these per connection (docker/galera-node.sh starts it).
#
# Arguments, if any, are the command that tells whether the node is synced
# instead (the tests run this script against nodes outside containers).
# The request line is read and ignored: there is one answer.
read -r _request || true
[ "$#" -gt 0 ] || set -- healthcheck.sh --su-mysql --connect --galera_online
if "$@" >/dev/null 2>&1; then
    status="200 OK" body="synced"
else
    status="503 Service Unavailable" body="not synced"
fi
printf 'HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
    "$status" "${#body}" "$body"
