# The MySQL and MariaDB stand-in: Debian's MariaDB with Galera and
# mariabackup (built by build-bases.sh), a start-up script that honours the
# official images' MYSQL_* and MARIADB_* settings, and the mariadb image's
# healthcheck.sh.
ARG BASE
FROM ${BASE}
# As in the official image: /etc/mysql/conf.d (where compose mounts its
# settings) is read after Debian's mariadb.conf.d, so its settings win, and
# Debian's bind-address, log and user lines are commented out.
RUN sed -i -e '/includedir/ {N;s/\(.*\)\n\(.*\)/\n\2\n\1/}' /etc/mysql/mariadb.cnf \
    && find /etc/mysql/ -name '*.cnf' -print0 \
        | xargs -0 grep -lZE '^(bind-address|log|user\s)' \
        | xargs -r -0 sed -Ei 's/^(bind-address|log|user\s)/#&/'
COPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY healthcheck.sh /usr/local/bin/healthcheck.sh
VOLUME /var/lib/mysql
EXPOSE 3306
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["mariadbd"]
