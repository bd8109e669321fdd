# The MySQL stand-in: Debian's MariaDB (built by build-bases.sh) with a
# start-up script that honours the official image's MYSQL_* settings.
ARG BASE
FROM ${BASE}
COPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/mysql
EXPOSE 3306
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["mariadbd"]
