"""The Flask class: sync checks remembered, with Flask's answer each time."""

import inspect

import flask.app
import pytest


def test_a_plain_function_is_used_as_it_is_and_checked_once(app, monkeypatch):
    def view():
        return "ok"

    checks = []
    real = inspect.iscoroutinefunction
    # Where Flask looks it up.
    monkeypatch.setattr(
        flask.app, "iscoroutinefunction", lambda f: checks.append(f) or real(f)
    )
    assert app.ensure_sync(view) is view
    assert app.ensure_sync(view) is view
    assert checks.count(view) == 1


def test_a_coroutine_function_still_gets_flasks_treatment(app):
    async def view():
        return "ok"

    try:
        import asgiref  # noqa: F401
    except ImportError:
        # Flask refuses async views without its async extra, as before.
        with pytest.raises(RuntimeError, match="async"):
            app.ensure_sync(view)
    else:
        assert app.ensure_sync(view) is not view


def test_requests_still_run_every_hook(client, auth):
    headers = auth.register()
    auth.add_post(headers, "hooks ran")
    response = client.get("/api/v1/posts/get-posts", headers=headers)
    # Set by after_request hooks: the request id and the security headers.
    assert response.headers["X-Request-Id"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.json[0]["text"] == "hooks ran"
