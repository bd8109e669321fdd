# postservice: the JSON API served by waitress. Build with `docker compose build`
# or `docker build -t postservice .`; see docs/deployment/docker.md.
# PYTHON_IMAGE swaps the base for one built locally (docker/ci/build-bases.sh)
# where no image registry is reachable.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    POSTSERVICE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app

# Dependencies first, in their own layer, so a code change does not
# reinstall them; exactly the locked versions, checked against their hashes.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY setup.cfg pyproject.toml MANIFEST.in README.md config.py wsgi.py ./
COPY postservice ./postservice
COPY migrations ./migrations
COPY docker/entrypoint.sh ./docker/entrypoint.sh
# Editable, so the package imported from anywhere is the one in /app, with
# its migrations beside it and its instance folder in /app/instance. The
# build backend comes from the lock too: nothing unpinned is fetched.
RUN pip install --no-deps --no-build-isolation --editable . \
    && useradd --system --no-create-home --home-dir /app --shell /usr/sbin/nologin postservice \
    && mkdir -p /app/instance \
    && chown postservice /app/instance

USER postservice

EXPOSE 8000
# slim has no curl; the interpreter is there anyway.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2).status != 200)"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["python", "-m", "postservice.serve"]
