"""A client generated from the OpenAPI document works against the server.

``openapi-python-client`` writes a Python package from
``/api/v1/openapi.json`` as the production server publishes it; the test
imports that package and logs in, refreshes and lists sessions with it, as an
app developer would.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import requests

from ..support.auth import PASSWORD

PACKAGE = "postservice_client"


def generate(base, workdir):
    document = workdir / "openapi.json"
    document.write_bytes(
        requests.get(base + "/api/v1/openapi.json", timeout=30).content
    )
    output = workdir / PACKAGE
    env = dict(os.environ)
    # Its post-generation hooks run ruff, from the same environment.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            "--path",
            str(document),
            "--output-path",
            str(output),
            "--meta",
            "none",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (output / "__init__.py").exists(), result.stdout + result.stderr
    sys.path.insert(0, str(workdir))
    importlib.invalidate_caches()
    return importlib.import_module(PACKAGE)


def test_a_generated_client_logs_in_refreshes_and_lists_sessions(
    start_server, tmp_path
):
    base = start_server()
    workdir = tmp_path / "generated"
    workdir.mkdir()
    try:
        generate(base, workdir)
        from postservice_client import AuthenticatedClient, Client
        from postservice_client.api.users import (
            users_list_sessions,
            users_login,
            users_refresh,
            users_register,
        )
        from postservice_client.models import Login, Refresh, Register, Token

        client = Client(base_url=base, raise_on_unexpected_status=True)
        email = "generated@example.com"
        registered = users_register.sync(
            client=client, body=Register(email=email, password=PASSWORD)
        )
        assert isinstance(registered, Token), registered
        pair = users_login.sync(
            client=client, body=Login(email=email, password=PASSWORD)
        )
        assert isinstance(pair, Token), pair
        assert pair.expires_in == 900
        new = users_refresh.sync(
            client=client, body=Refresh(refresh_token=pair.refresh_token)
        )
        assert isinstance(new, Token), new
        assert new.refresh_token != pair.refresh_token
        authed = AuthenticatedClient(
            base_url=base, token=new.access_token, raise_on_unexpected_status=True
        )
        sessions = users_list_sessions.sync(client=authed)
        assert [s.current for s in sessions] == [False, True]
        assert all(s.created_at.utcoffset().total_seconds() == 0 for s in sessions)
        # The rotated token again, within the interval: the same new token.
        again = users_refresh.sync(
            client=client, body=Refresh(refresh_token=pair.refresh_token)
        )
        assert again.refresh_token == new.refresh_token
    finally:
        sys.path.remove(str(workdir))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_a_generated_client_edits_with_if_match(start_server, tmp_path):
    base = start_server()
    workdir = tmp_path / "generated"
    workdir.mkdir()
    try:
        generate(base, workdir)
        from postservice_client import AuthenticatedClient, Client
        from postservice_client.api.posts import (
            posts_add_post,
            posts_edit_post,
            posts_get_post,
        )
        from postservice_client.api.users import users_register
        from postservice_client.models import AddPost, EditPost, Error, Post, Register

        client = Client(base_url=base, raise_on_unexpected_status=True)
        token = users_register.sync(
            client=client,
            body=Register(email="editor@example.com", password=PASSWORD),
        )
        authed = AuthenticatedClient(
            base_url=base, token=token.access_token, raise_on_unexpected_status=True
        )
        post_id = posts_add_post.sync(client=authed, body=AddPost(text="draft")).post_id
        read = posts_get_post.sync_detailed(post_id, client=authed)
        assert read.status_code == 200
        tag = read.headers["ETag"]
        edited = posts_edit_post.sync_detailed(
            post_id, client=authed, body=EditPost(text="final"), if_match=tag
        )
        assert edited.status_code == 200
        assert isinstance(edited.parsed, Post)
        assert edited.parsed.text == "final"
        stale = posts_edit_post.sync_detailed(
            post_id, client=authed, body=EditPost(text="lost"), if_match=tag
        )
        assert stale.status_code == 412
        assert isinstance(stale.parsed, Error)
        assert stale.parsed.detail == "Precondition Failed"
        assert posts_get_post.sync(post_id, client=authed).text == "final"
    finally:
        sys.path.remove(str(workdir))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]
