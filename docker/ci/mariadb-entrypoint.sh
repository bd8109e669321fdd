#!/bin/sh
# The official images' start-up contract, on Debian's MariaDB: on an empty
# data directory create the root password, the database and the user with
# its password, using a server that listens on its socket only (so a TCP
# health check fails until the real server is up); then run the server as
# mysql, listening on every interface. Arguments starting with "-" are
# server options, as with the official images.
#
# Settings, as the mariadb image reads them: MARIADB_ROOT_PASSWORD,
# MARIADB_DATABASE, MARIADB_USER, MARIADB_PASSWORD, each also under its
# MYSQL_* name (the mysql image's; the MARIADB_* one wins when both are set),
# and MARIADB_MYSQL_LOCALHOST_USER=1 for a mysql@localhost account that the
# unix user mysql logs in to without a password, with the privileges in
# MARIADB_MYSQL_LOCALHOST_GRANTS (USAGE without it).
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

# setting NAME: MARIADB_NAME, else MYSQL_NAME, else empty.
setting() { eval "printf '%s' \"\${MARIADB_$1:-\${MYSQL_$1:-}}\""; }
ROOT_PASSWORD=$(setting ROOT_PASSWORD)
DATABASE=$(setting DATABASE)
USER_NAME=$(setting USER)
USER_PASSWORD=$(setting PASSWORD)

shift  # the server's name; the rest are its options
# Written last: a data directory without it was never finished, and is
# initialised again from scratch. A Galera state transfer replaces the whole
# directory, this file included, but keeps grastate.dat: a directory that has
# it belongs to a cluster node and is never initialised again.
READY="$DATADIR/.initialised"

if [ ! -f "$READY" ] && [ ! -f "$DATADIR/grastate.dat" ]; then
    : "${ROOT_PASSWORD:?MARIADB_ROOT_PASSWORD (or MYSQL_ROOT_PASSWORD) must be set}"
    echo "initialising the database in $DATADIR"
    find "$DATADIR" -mindepth 1 -delete
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    # wsrep off, as in the official image: a Galera node's temporary server
    # must neither join the cluster nor replicate the accounts made here.
    mariadbd --user=mysql --datadir="$DATADIR" --skip-networking \
        --socket="$SOCKET" "$@" --wsrep-on=OFF &
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
    root_password=$(sql_quote "$ROOT_PASSWORD")
    # For healthcheck.sh, as the official image does: an account that may
    # only connect, its password in the data directory.
    healthcheck_password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    {
        # As the official image: root only as root@localhost and root@'%'.
        echo "DROP USER IF EXISTS root@'127.0.0.1', root@'::1';"
        echo "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@''', @@hostname, '''');"
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $root_password;"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY $root_password;"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        for host in 127.0.0.1 ::1 localhost; do
            echo "CREATE USER healthcheck@'$host' IDENTIFIED BY '$healthcheck_password';"
            echo "GRANT USAGE ON *.* TO healthcheck@'$host';"
        done
        if [ -n "${MARIADB_MYSQL_LOCALHOST_USER:-}" ]; then
            echo "CREATE USER mysql@localhost IDENTIFIED VIA unix_socket;"
            echo "GRANT ${MARIADB_MYSQL_LOCALHOST_GRANTS:-USAGE} ON *.* TO mysql@localhost;"
        fi
        if [ -n "$DATABASE" ]; then
            echo "CREATE DATABASE IF NOT EXISTS $(ident_quote "$DATABASE");"
        fi
        if [ -n "$USER_NAME" ] && [ -n "$USER_PASSWORD" ]; then
            user=$(sql_quote "$USER_NAME")
            echo "CREATE USER $user@'%' IDENTIFIED BY $(sql_quote "$USER_PASSWORD");"
            if [ -n "$DATABASE" ]; then
                echo "GRANT ALL ON $(ident_quote "$DATABASE").* TO $user@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --socket="$SOCKET" -uroot
    (
        umask 077
        printf '[mariadb-client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\nprotocol=tcp\n' \
            "$SOCKET" "$healthcheck_password" >"$DATADIR/.my-healthcheck.cnf"
    )
    chown mysql:mysql "$DATADIR/.my-healthcheck.cnf"
    mariadb-admin --socket="$SOCKET" -uroot -p"$ROOT_PASSWORD" shutdown
    wait "$pid"
    touch "$READY"
    echo "database initialised"
fi

exec mariadbd --user=mysql --datadir="$DATADIR" --bind-address=0.0.0.0 \
    --socket="$SOCKET" "$@"
