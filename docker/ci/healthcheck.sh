#!/bin/bash
# The official mariadb image's healthcheck.sh, for the tests it is used with
# here: run each test named on the command line in order; healthy (0) only
# if all pass. As there, the client uses $DATADIR/.my-healthcheck.cnf when it
# exists (the account the entrypoint made), and the client's defaults (the
# unix user, MYSQL_PWD) otherwise.
#
#   --connect         the server accepts TCP connections: the real server is
#                     up, not the socket-only one that initialises the data
#   --innodb_initialized  InnoDB is available
#   --galera_online   this Galera node is Synced (wsrep_local_state 4)
#   --galera_ready    the Galera provider is ready (wsrep_ready ON)
#   --su-mysql        first of all: run as the unix user mysql (for a
#                     mysql@localhost account that authenticates by it)
#
# Without --connect, the connect test runs last anyway, as upstream.
set -eo pipefail

if [ "${1:-}" = --su-mysql ]; then
    shift
    exec runuser -u mysql -- "$0" "$@"
fi

datadir=/var/lib/mysql
defaults=()
if [ -f "$datadir/.my-healthcheck.cnf" ]; then
    defaults=(--defaults-extra-file="$datadir/.my-healthcheck.cnf")
fi

query() {  # query SQL: one value, over the socket
    mariadb "${defaults[@]}" --protocol=socket --batch --skip-column-names -e "$1"
}

status() {  # status NAME: a global status variable's value
    query "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS
           WHERE VARIABLE_NAME = '$1'"
}

connect() {
    local answer
    # Over the socket first; skip_networking is 1 on the initialising server.
    answer=$(query 'SELECT @@skip_networking' 2>/dev/null) || true
    case "$answer" in
        0) return 0 ;;
        1) return 1 ;;
    esac
    # The account may be refused (a datadir another node's state replaced):
    # being refused over TCP still proves the server listens.
    answer=$(mariadb "${defaults[@]}" -h localhost --protocol=tcp --batch \
        --skip-column-names -e 'SELECT @@skip_networking' 2>&1) || true
    case "$answer" in
        0 | "ERROR 1"???" (28000)"*) return 0 ;;
        *) return 1 ;;
    esac
}

innodb_initialized() {
    [ "$(query "SELECT 1 FROM information_schema.ENGINES
                WHERE ENGINE = 'InnoDB' AND SUPPORT IN ('YES', 'DEFAULT')")" = 1 ]
}

galera_online() { [ "$(status WSREP_LOCAL_STATE)" = 4 ]; }

galera_ready() { [ "$(status WSREP_READY)" = ON ]; }

if [ "$#" -eq 0 ]; then
    echo "At least one argument required" >&2
    exit 1
fi
connected=""
for option; do
    case "$option" in
        --connect | --innodb_initialized | --galera_online | --galera_ready)
            test=${option#--}
            if ! "$test"; then
                echo "healthcheck $test failed" >&2
                exit 1
            fi
            [ "$test" = connect ] && connected=1
            ;;
        *)
            echo "Unknown healthcheck option $option" >&2
            exit 1
            ;;
    esac
done
if [ -z "$connected" ]; then
    connect
fi
