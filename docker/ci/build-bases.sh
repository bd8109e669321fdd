#!/usr/bin/env bash
# Local stand-ins for the official images (python, mysql and mariadb, redis,
# nginx, haproxy), built from Debian packages, for machines that cannot pull from an
# image registry.
# Each is built once and reused while present; a change to this recipe
# rebuilds them. Uses the Docker engine that DOCKER_HOST names.
#
#   docker/ci/build-bases.sh          # build what is missing
#   docker/ci/build-bases.sh --print  # print the settings that select them
#
# mmdebstrap fetches the packages with the host's apt, from its default
# Debian mirror.
set -euo pipefail
cd "$(dirname "$0")"

DOCKER=${DOCKER:-/usr/bin/docker}
SUITE=bookworm
PREFIX=postservice-ci
# The host's CA bundle: builds reach PyPI through whatever the host trusts.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# Each setting and the stand-in it selects. One MariaDB serves as the MySQL
# of docker-compose.yml and as the Galera nodes of docker-compose.galera.yml.
SETTINGS=(
    PYTHON_IMAGE=python MYSQL_IMAGE=mariadb GALERA_IMAGE=mariadb
    REDIS_IMAGE=redis NGINX_IMAGE=nginx HAPROXY_IMAGE=haproxy
)

if [ "${1:-}" = --print ]; then
    for setting in "${SETTINGS[@]}"; do
        echo "${setting%%=*}=$PREFIX/${setting#*=}:$SUITE"
    done
    exit 0
fi

current() {  # current NAME RECIPE: the image exists and was built by RECIPE
    local label
    label=$("$DOCKER" image inspect --format '{{ index .Config.Labels "recipe" }}' \
        "$PREFIX/$1:$SUITE" 2>/dev/null) || return 1
    [ "$label" = "$2" ]
}

build() {  # build NAME PACKAGES [mmdebstrap options...] -- [docker import --change...]
    local name=$1 packages=$2; shift 2
    local recipe
    recipe=$(printf '%s\n' "$SUITE" "$packages" "$@" | sha256sum | cut -c1-16)
    local options=() changes=()
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do options+=("$1"); shift; done
    [ "$#" -gt 0 ] && shift
    for change in "$@"; do changes+=(--change "$change"); done
    if current "$name" "$recipe"; then
        echo "$PREFIX/$name:$SUITE is up to date"
        return
    fi
    echo "building $PREFIX/$name:$SUITE"
    local started=$SECONDS
    mmdebstrap --quiet --variant=minbase --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "${options[@]}" "$SUITE" - |
        "$DOCKER" import "${changes[@]}" --change "LABEL recipe=$recipe" \
            - "$PREFIX/$name:$SUITE" >/dev/null
    echo "built $PREFIX/$name:$SUITE in $((SECONDS - started)) s"
}

build python python3,python3-venv,ca-certificates \
    --customize-hook="cp $CA_BUNDLE \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
    --customize-hook='chroot "$1" python3 -m venv /opt/python' \
    -- \
    'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "ENV PIP_CERT=$CA_BUNDLE" \
    'ENV LANG=C.UTF-8' \
    'CMD ["python"]'

# The servers' packages, then their start-up settings in a layer of their
# own, so that changing those does not bootstrap Debian again.
# mariadb-server brings galera-4, socat and rsync; mariabackup is the state
# transfer of docker/galera.cnf.
build mariadb-packages mariadb-server,mariadb-client,mariadb-backup \
    --customize-hook='rm -rf "$1"/var/lib/mysql/*' \
    -- \
    'ENV LANG=C.UTF-8'
"$DOCKER" build --quiet --tag "$PREFIX/mariadb:$SUITE" \
    --build-arg "BASE=$PREFIX/mariadb-packages:$SUITE" \
    --file mariadb.Dockerfile . >/dev/null

build redis-packages redis-server \
    --customize-hook='mkdir -p "$1/data" && chroot "$1" chown redis:redis /data' \
    -- \
    'WORKDIR /data' \
    'USER redis' \
    'EXPOSE 6379' \
    'CMD ["redis-server"]'
"$DOCKER" build --quiet --tag "$PREFIX/redis:$SUITE" \
    --build-arg "BASE=$PREFIX/redis-packages:$SUITE" \
    --file redis.Dockerfile . >/dev/null

build nginx nginx,curl \
    -- \
    'EXPOSE 80' \
    'CMD ["nginx", "-g", "daemon off;"]'

# The Galera proxy of docker-compose.galera.yml, which names its command;
# as the official image, it runs as the unix user haproxy.
build haproxy haproxy \
    -- \
    'USER haproxy' \
    'CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
