"""Forgotten passwords and verified emails, through a real SMTP server.

Mail goes to the outbox in the request's transaction and a worker
(``postservice.mail.delivery``) sends it to the aiosmtpd server of the
``smtp`` fixture; tests run the worker themselves, once or in threads.
"""

import logging
import time

import pytest
from sqlalchemy import select, text, update

from postservice.extensions import db
from postservice.mail import tokens
from postservice.models import EmailToken, OutboxMail
from postservice.ops import metrics

from ..support.auth import PASSWORD, changed
from ..support.smtp import (
    PUBLIC_URL,
    deliver,
    html_of,
    mail_app,
    text_of,
    token_in,
    workers_running,
)
from ..support.throttle import limited_app

RESET = "/api/v1/users/password-reset"
CONFIRM = "/api/v1/users/password-reset/confirm"
VERIFY = "/api/v1/users/verify-email"
RESEND = "/api/v1/users/me/verify-email"
LOGIN = "/api/v1/users/login"
ME = "/api/v1/users/me"
ADD_POST = "/api/v1/posts/add-post"
NEW_PASSWORD = "a brand new password"
INVALID = {"detail": "Invalid or expired token"}


@pytest.fixture
def app(make_app, smtp):
    return mail_app(make_app, smtp)


def register(client, email, password=PASSWORD):
    response = client.post(
        "/api/v1/users/register", json={"email": email, "password": password}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


def bearer(pair):
    return {"Authorization": "Bearer " + pair["access_token"]}


def reset_token(app, client, smtp, email):
    """Ask for a reset of ``email``, deliver, and read the token it mailed."""
    before = len(smtp.inbox.of("Reset"))
    assert client.post(RESET, json={"email": email}).status_code == 202
    deliver(app)
    mails = smtp.inbox.of("Reset")
    assert len(mails) == before + 1
    assert mails[-1]["To"] == email
    return token_in(mails[-1])


def outbox_rows(app):
    with app.app_context():
        rows = db.session.execute(select(OutboxMail.__table__)).all()
        db.session.rollback()
        return rows


def test_reset_answers_alike_and_mails_only_an_account(app, client, smtp):
    register(client, "known@example.com")
    deliver(app)  # the verification mail
    known = client.post(RESET, json={"email": "known@example.com"})
    unknown = client.post(RESET, json={"email": "nobody@example.com"})
    assert (known.status_code, unknown.status_code) == (202, 202)
    assert known.get_data() == unknown.get_data()
    assert known.json == {
        "detail": "If an account has this email, a reset link is on its way"
    }
    # Both requests are in the outbox, unprepared, before anything is sent.
    assert sorted(row.recipient for row in outbox_rows(app)) == [
        "known@example.com",
        "nobody@example.com",
    ]
    assert deliver(app) == 2
    resets = smtp.inbox.of("Reset")
    assert [mail["To"] for mail in resets] == ["known@example.com"]
    mail = resets[0]
    token = token_in(mail)
    link = f"{PUBLIC_URL}/reset-password?token={token}"
    assert link in text_of(mail)
    assert f'href="{link}"' in html_of(mail)
    assert mail["From"] == app.config["MAIL_DEFAULT_SENDER"]
    assert outbox_rows(app) == []
    with app.app_context():
        stored = db.session.scalars(select(EmailToken.token_hash)).all()
    # Only digests are stored, never the token itself.
    assert token not in stored
    assert tokens.digest(token) in stored


def test_reset_works_once_and_ends_every_session(app, client, smtp):
    pair = register(client, "owner@example.com")
    token = reset_token(app, client, smtp, "owner@example.com")
    response = client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 204
    assert response.get_data() == b""
    # No session is started, and every earlier one is over.
    assert client.get(ME, headers=bearer(pair)).status_code == 401
    refreshed = client.post(
        "/api/v1/users/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status_code == 401
    old = client.post(LOGIN, json={"email": "owner@example.com", "password": PASSWORD})
    assert old.status_code == 401
    new = client.post(
        LOGIN, json={"email": "owner@example.com", "password": NEW_PASSWORD}
    )
    assert new.status_code == 200
    sessions = client.get("/api/v1/users/me/sessions", headers=bearer(new.json))
    assert len(sessions.json) == 1
    # The mail reached the address: it counts as verified.
    assert client.get(ME, headers=bearer(new.json)).json["email_verified"] is True
    again = client.post(CONFIRM, json={"token": token, "new_password": "yet another 1"})
    assert (again.status_code, again.json) == (400, INVALID)


def test_a_reset_ends_the_other_reset_links(app, client, smtp):
    register(client, "twice@example.com")
    first = reset_token(app, client, smtp, "twice@example.com")
    second = reset_token(app, client, smtp, "twice@example.com")
    assert first != second
    used = client.post(CONFIRM, json={"token": second, "new_password": NEW_PASSWORD})
    assert used.status_code == 204
    late = client.post(CONFIRM, json={"token": first, "new_password": "other pass 12"})
    assert (late.status_code, late.json) == (400, INVALID)


def test_altered_malformed_expired_and_foreign_tokens_are_refused(app, client, smtp):
    register(client, "careful@example.com")
    deliver(app)
    verification = token_in(smtp.inbox.of("Confirm")[0])
    token = reset_token(app, client, smtp, "careful@example.com")
    for bad in (
        changed(token),
        token[:-1],
        token + "A",
        "",
        "not a token at all",
        "é" * 43,
        verification,  # a token of another purpose
    ):
        response = client.post(
            CONFIRM, json={"token": bad, "new_password": "fine pass 1"}
        )
        assert (response.status_code, response.json) == (400, INVALID), bad
    with app.app_context():
        db.session.execute(
            update(EmailToken)
            .where(EmailToken.token_hash == tokens.digest(token))
            .values(expires_at=int(time.time()) - 1)
        )
        db.session.commit()
    expired = client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    assert (expired.status_code, expired.json) == (400, INVALID)
    # None of it changed the password.
    login = client.post(
        LOGIN, json={"email": "careful@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200


def test_a_refused_new_password_keeps_the_token(app, client, smtp):
    register(client, "patient@example.com")
    token = reset_token(app, client, smtp, "patient@example.com")
    for weak in ("short", "x" * 73):
        refused = client.post(CONFIRM, json={"token": token, "new_password": weak})
        assert refused.status_code == 422
        assert list(refused.json["errors"]) == ["new_password"]
    response = client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    assert response.status_code == 204


def test_wrong_bodies_are_clear_errors(client):
    assert client.post(RESET, json={"email": "not an email"}).status_code == 422
    assert (
        client.post(RESET, data="{", content_type="application/json").status_code == 400
    )
    assert (
        client.post(
            CONFIRM, json={"token": 5, "new_password": NEW_PASSWORD}
        ).status_code
        == 422
    )
    response = client.post(VERIFY, json={"token": "x"})
    assert (response.status_code, response.json) == (400, INVALID)


def test_a_server_down_during_the_request_gets_the_mail_once_back(app, client, smtp):
    register(client, "patient2@example.com")
    deliver(app)
    smtp.stop()
    response = client.post(RESET, json={"email": "patient2@example.com"})
    assert response.status_code == 202
    with workers_running(app):
        # The worker tried and failed at least once while the server was down.
        deadline = time.monotonic() + 30
        while not any(row.attempts for row in outbox_rows(app)):
            assert time.monotonic() < deadline, "the worker never tried"
            time.sleep(0.05)
        [row] = outbox_rows(app)
        assert row.last_error.startswith("ConnectionRefusedError")
        smtp.start()
        smtp.inbox.wait_for(2)  # the verification mail and the reset
    assert len(smtp.inbox.of("Reset")) == 1
    assert outbox_rows(app) == []


def test_a_refusing_server_is_tried_again(app, client, smtp):
    smtp.inbox.refusals = 2
    register(client, "refused@example.com")
    with workers_running(app):
        smtp.inbox.wait_for(1)
    assert smtp.inbox.refused == 2
    assert len(smtp.inbox.messages) == 1
    exposition = metrics.exposition(app)
    assert 'postservice_mail_failed_total{final="false",kind="verify_email"} 2.0' in (
        exposition
    )
    assert 'postservice_mail_sent_total{kind="verify_email"} 1.0' in exposition


def test_mail_set_aside_after_its_tries_and_put_back(make_app, smtp):
    app = mail_app(make_app, smtp, MAIL_MAX_ATTEMPTS=1)
    client = app.test_client()
    smtp.stop()
    register(client, "aside@example.com")
    deliver(app)
    [row] = outbox_rows(app)
    assert row.failed_at is not None
    runner = app.test_cli_runner()
    status = runner.invoke(args=["mail", "status"])
    assert "waiting: 0, set aside: 1" in status.output
    assert "verify_email: set aside" in status.output
    assert "aside@example.com" not in status.output
    assert "back in line" in runner.invoke(args=["mail", "retry"]).output
    smtp.start()
    result = runner.invoke(args=["mail", "deliver", "--once"])
    assert result.exit_code == 0, result.output
    assert "handled 1 mail(s)" in result.output
    assert [m["To"] for m in smtp.inbox.messages] == ["aside@example.com"]


def test_two_workers_send_each_mail_once(make_app, smtp):
    first = mail_app(make_app, smtp)
    second = mail_app(make_app, smtp)
    client = first.test_client()
    emails = [f"many{n}@example.com" for n in range(20)]
    for address in emails:
        register(client, address)
    with workers_running(first, second, poll_interval=0.01):
        smtp.inbox.wait_for(len(emails))
        deadline = time.monotonic() + 30
        while outbox_rows(first):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert sorted(m["To"] for m in smtp.inbox.messages) == sorted(emails)
    sent = [
        metrics.exposition(app).count(
            'postservice_mail_sent_total{kind="verify_email"}'
        )
        for app in (first, second)
    ]
    assert sent == [1, 1]


@pytest.fixture
def gated(make_app, smtp, storage):
    return limited_app(
        make_app,
        storage,
        MAIL_URL=smtp.url,
        PUBLIC_URL=PUBLIC_URL,
        REQUIRE_VERIFIED_EMAIL=True,
    )


def test_verification_opens_the_posts_routes(gated, smtp):
    client = gated.test_client()
    headers = bearer(register(client, "new@example.com"))
    assert client.get(ME, headers=headers).json["email_verified"] is False
    refused = client.post(ADD_POST, json={"text": "hello"}, headers=headers)
    assert (refused.status_code, refused.json) == (
        403,
        {"detail": "Email not verified"},
    )
    listing = client.get("/api/v1/posts/get-posts", headers=headers)
    assert listing.status_code == 403
    # The account's own routes stay open.
    assert client.get("/api/v1/users/me/sessions", headers=headers).status_code == 200
    deliver(gated)
    [mail] = smtp.inbox.of("Confirm")
    token = token_in(mail)
    assert f"{PUBLIC_URL}/verify-email?token={token}" in text_of(mail)
    response = client.post(VERIFY, json={"token": token})
    assert response.status_code == 204
    assert response.get_data() == b""
    # The same access token: its cached verdict went with the change.
    assert client.get(ME, headers=headers).json["email_verified"] is True
    added = client.post(ADD_POST, json={"text": "hello"}, headers=headers)
    assert added.status_code == 200
    again = client.post(RESEND, headers=headers)
    assert (again.status_code, again.json) == (
        400,
        {"detail": "Email already verified"},
    )


def test_verification_mail_asked_again(app, client, smtp):
    headers = bearer(register(client, "again@example.com"))
    response = client.post(RESEND, headers=headers)
    assert (response.status_code, response.json) == (
        202,
        {"detail": "A verification link is on its way"},
    )
    deliver(app)
    first, second = smtp.inbox.of("Confirm")
    assert token_in(first) != token_in(second)
    assert client.post(VERIFY, json={"token": token_in(second)}).status_code == 204
    used = client.post(VERIFY, json={"token": token_in(second)})
    assert (used.status_code, used.json) == (400, INVALID)
    assert client.post(RESEND).status_code == 401


def test_without_the_setting_unverified_accounts_post(app, client):
    headers = bearer(register(client, "relaxed@example.com"))
    assert (
        client.post(ADD_POST, json={"text": "hi"}, headers=headers).status_code == 200
    )


def test_resets_are_throttled_per_email_and_per_address(make_app, smtp, storage):
    app = limited_app(
        make_app,
        storage,
        MAIL_URL=smtp.url,
        PASSWORD_RESET_RATE_LIMIT="2/hour",
        LOGIN_RATE_LIMIT="4/minute",
    )
    client = app.test_client()
    statuses = [
        client.post(RESET, json={"email": "target@example.com"}).status_code
        for _ in range(3)
    ]
    assert statuses == [202, 202, 429]
    assert client.post(RESET, json={"email": "other@example.com"}).status_code == 202
    # The address has used its four.
    last = client.post(RESET, json={"email": "third@example.com"})
    assert last.status_code == 429
    assert int(last.headers["Retry-After"]) >= 1
    # Throttled requests queued nothing.
    assert len(outbox_rows(app)) == 3


def test_verification_mails_are_throttled_per_account(make_app, smtp, storage):
    app = limited_app(
        make_app, storage, MAIL_URL=smtp.url, VERIFY_EMAIL_RATE_LIMIT="1/hour"
    )
    client = app.test_client()
    headers = bearer(register(client, "eager@example.com"))
    assert client.post(RESEND, headers=headers).status_code == 202
    assert client.post(RESEND, headers=headers).status_code == 429


def test_no_token_in_any_log_line(app, client, smtp, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    pair = register(client, "quiet@example.com")
    client.post(RESEND, headers=bearer(pair))
    smtp.inbox.refusals = 1  # a failed try is logged too
    deliver(app)
    time.sleep(1.1)  # MAIL_RETRY_INITIAL
    deliver(app)
    token = reset_token(app, client, smtp, "quiet@example.com")
    client.post(CONFIRM, json={"token": token, "new_password": "x"})
    client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    mailed = [token_in(m) for m in smtp.inbox.messages]
    assert len(mailed) == 3
    client.post(VERIFY, json={"token": mailed[0]})
    # Everything but the test SMTP server's own log ("mail.log", aiosmtpd's),
    # which shows the mails it receives.
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    logged = "\n".join(caplog.handler.format(r) for r in ours)
    logged += "".join(capsys.readouterr())
    assert "not sent" in logged  # the log was captured
    for sent in mailed:
        assert sent not in logged
        assert tokens.digest(sent) not in logged


def test_metrics_count_mail_and_age_the_outbox(app, client, smtp):
    register(client, "counted@example.com")
    client.post(RESET, json={"email": "counted@example.com"})
    client.post(RESET, json={"email": "nobody@example.com"})
    with app.app_context():
        db.session.execute(text("UPDATE mail_outbox SET created_at = created_at - 60"))
        db.session.commit()
    exposition = metrics.exposition(app)
    assert 'postservice_mail_queued_total{kind="password_reset"} 2.0' in exposition
    assert 'postservice_mail_queued_total{kind="verify_email"} 1.0' in exposition
    assert "postservice_mail_outbox_waiting 3.0" in exposition
    age = next(
        line
        for line in exposition.splitlines()
        if line.startswith("postservice_mail_outbox_oldest_age_seconds ")
    )
    assert float(age.split()[1]) >= 60
    deliver(app)
    exposition = metrics.exposition(app)
    assert "postservice_mail_outbox_waiting 0.0" in exposition
    assert "postservice_mail_outbox_oldest_age_seconds 0.0" in exposition
    assert 'postservice_mail_dropped_total{kind="password_reset"} 1.0' in exposition
    assert 'postservice_mail_sent_total{kind="password_reset"} 1.0' in exposition


def test_without_mail_url_each_mail_is_one_log_line(make_app, caplog):
    app = make_app(MAIL_URL=None)
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="postservice.mail.console")
    register(client, "local@example.com")
    assert deliver(app) == 1
    [record] = [r for r in caplog.records if r.name == "postservice.mail.console"]
    line = record.getMessage()
    assert "\n" not in line
    assert "to local@example.com" in line
    assert "http://127.0.0.1:8000/verify-email?token=" in line
    token = line.rsplit("token=", 1)[1]
    assert client.post(VERIFY, json={"token": token}).status_code == 204
