"""/healthz and /readyz, against real and unreachable servers."""

import time

from ..support.processes import free_port


def test_healthz_says_the_process_is_alive(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}
    assert response.mimetype == "application/json"


def test_readyz_checks_the_database_and_redis(client, redis_url):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "database": "ok",
        "redis": "ok" if redis_url else "not configured",
    }


def test_readyz_with_redis_only_is_ready(make_app, real_redis_url):
    response = make_app(REDIS_URL=real_redis_url).test_client().get("/readyz")
    assert response.json == {"status": "ok", "database": "ok", "redis": "ok"}


def test_unreachable_redis_is_reported_but_still_ready(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    response = app.test_client().get("/readyz")
    assert time.monotonic() - started < 2  # a refused connection, not a hang
    assert response.status_code == 200
    assert response.json == {
        "status": "degraded",
        "database": "ok",
        "redis": "unavailable",
    }


def test_unreachable_database_is_not_ready(make_app):
    app = make_app(
        SQLALCHEMY_DATABASE_URI=f"mysql+pymysql://root@127.0.0.1:{free_port()}/gone"
    )
    client = app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json["detail"] == "Database unavailable"
    assert response.json["database"] == "unavailable"
    assert response.json["status"] == "unavailable"
    # Alive all the same: the process is fine, its database is not.
    assert client.get("/healthz").status_code == 200


def test_health_routes_answer_json_errors_for_wrong_methods(client):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.json == {"detail": "Method Not Allowed"}
