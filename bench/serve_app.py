"""Serve ``module:factory`` on the service's own server, for the benchmark.

    python bench/serve_app.py postservice:create_app

The service and the floor apps all run on ``postservice.serve``'s server,
the one ``python -m postservice.serve`` runs in production: waitress with
the service's settings and connection class, from ``HOST``, ``PORT`` and
``WAITRESS_THREADS``. So the floors differ from the service in the app
alone. The working directory comes first on ``sys.path``, as under
``python -m``: ``compare.py`` serves another checkout's code from it.
"""

import importlib
import os
import signal
import sys


def main():
    sys.path.insert(0, os.getcwd())
    try:
        from config import server_settings
    except ImportError:  # a checkout from before config read the server's
        serve_older_checkout()
        return
    import postservice.serve
    from postservice.ops import logs
    from postservice.serve import GracefulServer

    module, _, factory = sys.argv[1].partition(":")
    app = getattr(importlib.import_module(module), factory)()
    # The floors have no pool; the check that threads fit it is the service's.
    settings = server_settings(pool_size=app.config.get("DATABASE_POOL_SIZE", 1_000))
    logs.configure(settings.log_format)
    server = GracefulServer(app, settings.waitress())
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    # As ``python -m postservice.serve`` does, where a checkout's does.
    freeze = getattr(postservice.serve, "freeze_startup_heap", None)
    if freeze is not None:
        freeze()
    server.run(settings.shutdown_timeout)


def serve_older_checkout():
    """The same for a checkout whose server read its own settings, so that
    ``compare.py`` can set this build beside one from before."""
    from config import log_format
    from postservice import logconfig
    from postservice.serve import GracefulServer, server_settings, shutdown_timeout

    module, _, factory = sys.argv[1].partition(":")
    env = os.environ
    logconfig.configure(log_format(env))
    app = getattr(importlib.import_module(module), factory)()
    pool_size = app.config.get("DATABASE_POOL_SIZE", 1_000)
    server = GracefulServer(app, server_settings(env, pool_size))
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    server.run(shutdown_timeout(env))


if __name__ == "__main__":
    main()
