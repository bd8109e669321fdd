# The Redis stand-in: Debian's redis-server (built by build-bases.sh). Like
# the official image, a server started without a configuration file
# answers other containers: protected mode would refuse every client that
# is not on the loopback interface.
ARG BASE
FROM ${BASE}
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = redis-server ]; then set -- \"$@\" --protected-mode no; fi; exec \"$@\"", "sh"]
CMD ["redis-server"]
