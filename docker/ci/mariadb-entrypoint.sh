#!/bin/sh
# The MySQL image's start-up contract, on Debian's MariaDB: on an empty data
# directory create the root password, MYSQL_DATABASE and MYSQL_USER with
# MYSQL_PASSWORD, using a server that listens on its socket only (so a TCP
# health check fails until the real server is up); then run the server as
# mysql, listening on every interface. Arguments starting with "-" are
# server options, as with the official image.
set -eu
DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

if [ "${1#-}" != "$1" ] || [ "$#" -eq 0 ]; then
    set -- mariadbd "$@"
fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
    exec "$@"
fi

mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld "$DATADIR"

# Quote a value for SQL: double every backslash and single quote.
sql_quote() { printf "'%s'" "$(printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/''/g")"; }
ident_quote() { printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"; }

shift  # the server's name; the rest are its options
# Written last: a data directory without it was never finished, and is
# initialised again from scratch.
READY="$DATADIR/.initialised"

if [ ! -f "$READY" ]; then
    : "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD must be set}"
    echo "initialising the database in $DATADIR"
    find "$DATADIR" -mindepth 1 -delete
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    mariadbd --user=mysql --datadir="$DATADIR" --skip-networking \
        --socket="$SOCKET" "$@" &
    pid=$!
    tries=0
    until mariadb-admin --socket="$SOCKET" ping --silent >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 120 ]; then
            echo "the initialising server did not start" >&2
            exit 1
        fi
        sleep 0.5
    done
    root_password=$(sql_quote "$MYSQL_ROOT_PASSWORD")
    {
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $root_password;"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY $root_password;"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS $(ident_quote "$MYSQL_DATABASE");"
        fi
        if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
            user=$(sql_quote "$MYSQL_USER")
            echo "CREATE USER $user@'%' IDENTIFIED BY $(sql_quote "$MYSQL_PASSWORD");"
            if [ -n "${MYSQL_DATABASE:-}" ]; then
                echo "GRANT ALL ON $(ident_quote "$MYSQL_DATABASE").* TO $user@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --socket="$SOCKET" -uroot
    mariadb-admin --socket="$SOCKET" -uroot -p"$MYSQL_ROOT_PASSWORD" shutdown
    wait "$pid"
    touch "$READY"
    echo "database initialised"
fi

exec mariadbd --user=mysql --datadir="$DATADIR" --bind-address=0.0.0.0 \
    --socket="$SOCKET" "$@"
