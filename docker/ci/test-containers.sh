#!/usr/bin/env bash
# The container tests (tests/deploy/test_containers*.py) as CI runs them: on the
# Docker engine that answers, or on one started here and stopped again at
# the end, pass or fail, with the host put back as it was
# (docker/ci/dockerd.sh). Leftover test stacks are removed either way.
set -euo pipefail
cd "$(dirname "$0")/../.."

started_dockerd=""
remove_test_stacks() {
    local project
    for project in $(/usr/bin/docker ps --all --format '{{.Label "com.docker.compose.project"}}' |
        grep '^pstest' | sort -u); do
        /usr/bin/docker ps --all --quiet --filter "label=com.docker.compose.project=$project" |
            xargs --no-run-if-empty /usr/bin/docker rm --force --volumes >/dev/null
        /usr/bin/docker network ls --quiet --filter "label=com.docker.compose.project=$project" |
            xargs --no-run-if-empty /usr/bin/docker network rm >/dev/null
        /usr/bin/docker volume ls --quiet --filter "label=com.docker.compose.project=$project" |
            xargs --no-run-if-empty /usr/bin/docker volume rm >/dev/null
    done
}
finish_containers() {
    remove_test_stacks || true
    if [ -n "$started_dockerd" ]; then
        echo "stopping the Docker engine started for the tests"
        docker/ci/dockerd.sh stop
    fi
}
trap finish_containers EXIT
if ! /usr/bin/docker version >/dev/null 2>&1; then
    echo "starting a Docker engine"
    started_dockerd=1
    eval "$(docker/ci/dockerd.sh start)"
fi
docker/ci/build-bases.sh
./scripts/test.sh -m containers "$@" tests/deploy/test_containers*.py
