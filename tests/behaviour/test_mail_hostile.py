"""Mail against hostile addresses, hostile SMTP servers and a stolen link."""

import contextlib
import logging
import smtplib
import socket
import socketserver
import ssl
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from postservice.extensions import db
from postservice.mail import delivery, outbox
from postservice.mail import smtp as mail_smtp
from postservice.models import OutboxMail

from ..support.auth import PASSWORD
from ..support.smtp import (
    PUBLIC_URL,
    Inbox,
    deliver,
    mail_app,
    spare_port,
    token_in,
    workers_running,
)
from ..support.throttle import limited_app

REGISTER = "/api/v1/users/register"
RESET = "/api/v1/users/password-reset"
CONFIRM = "/api/v1/users/password-reset/confirm"
LOGIN = "/api/v1/users/login"
ME = "/api/v1/users/me"
CHANGE = "/api/v1/users/change-password"
NEW_PASSWORD = "a brand new password"
INVALID = {"detail": "Invalid or expired token"}


class EnvelopeInbox(Inbox):
    """Inbox that also keeps each mail's envelope recipients, and can answer
    the end of DATA with a reply of the test's choosing."""

    def __init__(self):
        super().__init__()
        self.envelopes = []
        self.data_reply = None

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply is not None:
            return self.data_reply
        with self.changed:
            self.envelopes.append(list(envelope.rcpt_tos))
        return await super().handle_DATA(server, session, envelope)


class EnvelopeCatcher:
    """An SMTP server (SMTPUTF8 on) whose inbox sees the envelopes."""

    def __init__(self):
        self.port = spare_port()
        self.inbox = EnvelopeInbox()
        self.controller = Controller(
            self.inbox, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True
        )

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"


@pytest.fixture
def envelope_smtp():
    catcher = EnvelopeCatcher()
    catcher.controller.start()
    yield catcher
    catcher.controller.stop()


def register(client, email, password=PASSWORD):
    return client.post(REGISTER, json={"email": email, "password": password})


def bearer(pair):
    return {"Authorization": "Bearer " + pair["access_token"]}


def outbox_rows(app):
    with app.app_context():
        rows = db.session.execute(select(OutboxMail.__table__)).all()
        db.session.rollback()
        return rows


def ace(address):
    """``address`` with its domain in IDNA's ASCII form (how SMTP names it)."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"


# Retries far beyond a test's length: a failed try stays one try.
ONE_TRY = {"MAIL_RETRY_INITIAL": 3600, "MAIL_RETRY_MAX": 3600}


# --- Addresses mail would not reach as written ----------------------------

UNSENDABLE = [
    # CR/LF-like control characters in a quoted local part: an attempt at
    # header injection; the email package refuses the header it would make.
    pytest.param('"a\x0cbcc:x@evil.com"@example.com', id="formfeed-header"),
    # A Unicode paragraph separator in the domain (marshmallow's \u00a1-\uffff
    # "letters"): the IDNA codec refuses it.
    pytest.param("user@exam\u2029ple.com", id="unicode-separator-domain"),
    # An IDN label of 60 letters: over 63 octets once in ACE form.
    pytest.param("user@" + "\u00e4" * 60 + ".com", id="idn-label-too-long"),
]


@pytest.mark.parametrize("address", UNSENDABLE)
def test_an_unsendable_address_is_refused(make_app, smtp, address):
    app = mail_app(make_app, smtp)
    response = register(app.test_client(), address)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.json["errors"] == {"email": ["Not a valid email address."]}
    assert outbox_rows(app) == []


@pytest.mark.parametrize("address", UNSENDABLE)
def test_an_unsendable_address_from_before_does_not_stop_the_worker(
    make_app, smtp, address
):
    """A row of an account registered before addresses were checked: the
    mailer cannot build its mail (the email package and the IDNA codec
    raise). It is set aside at once, unsent, and the worker goes on."""
    app = mail_app(make_app, smtp)
    with app.app_context():
        outbox.add("verify_email", address, "Confirm", "text", "<p>html</p>")
        db.session.commit()
    assert register(app.test_client(), "next@example.com").status_code == 201
    with workers_running(app) as [thread]:
        smtp.inbox.wait_for(1)
        alive = thread.is_alive()
    assert alive, "the mail worker died on one mail"
    assert [m["To"] for m in smtp.inbox.of("Confirm")] == ["next@example.com"]
    [row] = outbox_rows(app)
    assert (row.recipient, row.attempts) == (address, 1)
    assert row.failed_at is not None
    assert row.last_error == "Unmailable"


def test_a_mail_that_cannot_be_built_is_a_failed_try(make_app, smtp, monkeypatch):
    """Any error of one mail is that mail's failed try, described by its
    class alone (its words may quote the address); the worker goes on."""
    # Tried once: deliver() goes on while mails are due, and a retry due a
    # second later would be a second try in a slow run.
    app = mail_app(make_app, smtp, **ONE_TRY)
    real = delivery.send

    def broken(mail):
        if mail.recipient == "first@example.com":
            raise ValueError("cannot fold first@example.com")
        real(mail)

    monkeypatch.setattr(delivery, "send", broken)
    client = app.test_client()
    assert register(client, "first@example.com").status_code == 201
    assert register(client, "next@example.com").status_code == 201
    assert deliver(app) == 2
    assert [m["To"] for m in smtp.inbox.of("Confirm")] == ["next@example.com"]
    [row] = outbox_rows(app)
    assert (row.attempts, row.failed_at, row.last_error) == (1, None, "ValueError")


# --- Mail to another mailbox than the account's ---------------------------


class RawSMTP:
    """A minimal SMTP server that keeps the envelope as it came on the wire
    (aiosmtpd parses RCPT TO with the email package, which decodes RFC 2047
    words itself and would hide what the client sent). Offers SMTPUTF8."""

    def __init__(self):
        self.port = spare_port()
        self.rcpt = []  # the raw addresses of RCPT TO, one list per mail
        self.data = []
        self.greeting_pause = 0
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                def say(line):
                    self.wfile.write(line.encode() + b"\r\n")
                    self.wfile.flush()

                if outer.greeting_pause:
                    # A tarpit: the greeting one byte at a time, each byte
                    # well within MAIL_TIMEOUT of the one before.
                    for byte in b"220 raw ESMTP\r\n":
                        time.sleep(outer.greeting_pause)
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                else:
                    say("220 raw ESMTP")
                current = []
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        say("250-raw")
                        say("250-8BITMIME")
                        say("250 SMTPUTF8")
                    elif verb == b"MAIL":
                        current = []
                        say("250 OK")
                    elif verb == b"RCPT":
                        raw = line.decode("utf-8", "replace").strip()
                        current.append(raw[raw.index("<") + 1 : raw.rindex(">")])
                        say("250 OK")
                    elif verb == b"DATA":
                        say("354 go on")
                        body = b""
                        while not body.endswith(b"\r\n.\r\n"):
                            chunk = self.rfile.readline()
                            if not chunk:
                                return
                            body += chunk
                        outer.data.append(body)
                        outer.rcpt.append(current)
                        say("250 OK")
                    elif verb == b"QUIT":
                        say("221 bye")
                        return
                    else:
                        say("250 OK")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}?starttls=off"


@pytest.fixture
def raw_smtp():
    catcher = RawSMTP()
    thread = threading.Thread(target=catcher.server.serve_forever, daemon=True)
    thread.start()
    yield catcher
    catcher.server.shutdown()
    catcher.server.server_close()


ELSEWHERE = [
    # RFC 2047 encoded words are not allowed in an addr-spec (RFC 2047 5.(3)):
    # this is a literal local part, but the mailer decodes it to "victim".
    pytest.param("=?utf-8?q?victim?=@example.com", id="encoded-word-local-part"),
    pytest.param("=?iso-8859-1?q?vic=74im?=@example.com", id="encoded-word-latin1"),
    # A non-ASCII local part goes out as "=?utf-8?b?w7w=?=@example.com",
    # though the server offers SMTPUTF8.
    pytest.param("\u00fc@example.com", id="non-ascii-local-part"),
]


@pytest.mark.parametrize("address", ELSEWHERE)
def test_the_mail_goes_to_the_accounts_address(make_app, raw_smtp, address):
    """The mailer would send to another mailbox than the one written (it
    decodes RFC 2047 words; it writes a non-ASCII local part as one): the
    owner would never get the link, and whoever holds the other mailbox
    would (docs/api/mail.md: the link "proves the address theirs"). Such
    an address is refused."""
    app = mail_app(make_app, raw_smtp)
    response = register(app.test_client(), address)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert deliver(app) == 0
    assert raw_smtp.rcpt == []


@pytest.mark.parametrize(
    "address", ["plain@example.com", "a@b\u00fccher.de", "a@xn--bcher-kva.de"]
)
def test_the_mail_goes_to_the_accounts_own_address(make_app, raw_smtp, address):
    app = mail_app(make_app, raw_smtp)
    client = app.test_client()
    response = register(client, address)
    assert response.status_code == 201, response.get_data(as_text=True)
    stored = client.get(ME, headers=bearer(response.json)).json["email"]
    assert deliver(app) == 1
    assert raw_smtp.rcpt == [[ace(stored)]]


# --- The recipient's address in the worker's log and `mail status` -------


def test_a_refusal_quoting_the_address_keeps_it_out_of_logs_and_status(
    make_app, envelope_smtp, caplog
):
    """Amazon SES in its sandbox answers the end of DATA with "554 Message
    rejected: Email address is not verified. The following identities
    failed the check in region ...: <address>". ``outbox.describe`` only
    hides the address of SMTPRecipientsRefused; an SMTPDataError's reply
    goes whole into the log line, ``last_error`` and ``flask mail status``.
    docs/operations.md: the log names the mail "by id and kind, never its
    address, body or token"; `mail status` shows "never an address"."""
    address = "private.person@example.com"
    envelope_smtp.inbox.data_reply = (
        "554 Message rejected: Email address is not verified. The following "
        f"identities failed the check in region US-EAST-1: {address}"
    )
    app = mail_app(make_app, envelope_smtp, **ONE_TRY)
    client = app.test_client()
    caplog.set_level(logging.DEBUG, logger="postservice")
    assert register(client, address).status_code == 201
    deliver(app)
    [row] = outbox_rows(app)
    assert row.attempts == 1  # the try failed, as the server said
    logged = "\n".join(
        caplog.handler.format(r)
        for r in caplog.records
        if r.name.startswith("postservice")
    )
    assert "not sent, try 1" in logged
    status = app.test_cli_runner().invoke(args=["mail", "status"])
    assert status.exit_code == 0, status.output
    assert address not in logged
    assert address not in status.output
    assert address not in (row.last_error or "")


# --- A reset link and a change of the password ----------------------------


@pytest.mark.parametrize("ending", ["change-password", "logout-all"])
def test_a_reset_link_ends_with_a_change_of_password_or_logout_all(
    make_app, smtp, ending
):
    """Someone who once read the owner's mailbox holds a reset link; the
    owner changes the password or logs out everywhere (the remedies): the
    link no longer sets a password (docs/api/users.md)."""
    app = mail_app(make_app, smtp)
    client = app.test_client()
    pair = register(client, "owner@example.com").json
    deliver(app)
    assert client.post(RESET, json={"email": "owner@example.com"}).status_code == 202
    deliver(app)
    [mail] = smtp.inbox.of("Reset")
    password = _end(client, pair, ending)
    late = client.post(
        CONFIRM, json={"token": token_in(mail), "new_password": "attacker pass 1"}
    )
    assert (late.status_code, late.json) == (400, INVALID)
    login = client.post(
        LOGIN, json={"email": "owner@example.com", "password": password}
    )
    assert login.status_code == 200


@pytest.mark.parametrize("ending", ["change-password", "logout-all"])
def test_a_reset_asked_for_before_a_change_of_password_mails_no_link(
    make_app, smtp, ending
):
    """A reset request waits in the outbox as a request until a worker
    turns it into a link: one asked for before the change (the worker down
    meanwhile) becomes no link at all."""
    app = mail_app(make_app, smtp)
    client = app.test_client()
    pair = register(client, "owner@example.com").json
    deliver(app)
    assert client.post(RESET, json={"email": "owner@example.com"}).status_code == 202
    _end(client, pair, ending)
    deliver(app)
    assert smtp.inbox.of("Reset") == []
    assert outbox_rows(app) == []


def _end(client, pair, ending):
    """Change the password or log out everywhere; the password afterwards."""
    if ending == "change-password":
        changed = client.post(
            CHANGE,
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(pair),
        )
        assert changed.status_code == 200, changed.get_data(as_text=True)
        return NEW_PASSWORD
    assert (
        client.post("/api/v1/users/logout-all", headers=bearer(pair)).status_code == 204
    )
    return PASSWORD


# --- The per-email bound and spellings of one mailbox ---------------------


def test_reset_mails_to_one_mailbox_are_bounded(make_app, raw_smtp, storage):
    """``victim@\uff45xample.com`` (fullwidth e) would be another "email" to the API
    (another account, another PASSWORD_RESET_RATE_LIMIT count) but IDNA
    maps its domain to example.com, so its mail lands in victim@example.com.
    Ten letters of the domain give 2^10 spellings, each with its own 5
    resets an hour (and its own verification mails). config.py: "Reset
    mails asked for one email, from anywhere: an inbox is not flooded";
    docs/api/mail.md: throttled "per email, whoever asks". The address
    should be normalised as it is mailed (IDNA mapping) before it is
    stored and counted, so spellings of one address are one account and
    one count."""
    app = limited_app(
        make_app,
        storage,
        MAIL_URL=raw_smtp.url,
        PUBLIC_URL=PUBLIC_URL,
        PASSWORD_RESET_RATE_LIMIT="1/hour",
    )
    client = app.test_client()
    spellings = [
        "victim@example.com",
        "victim@\uff45xample.com",
        "victim@e\uff58ample.com",
        "victim@example.\uff43om",
    ]
    for address in spellings:
        assert register(client, address).status_code in (201, 400, 422)
    deliver(app)
    raw_smtp.rcpt.clear()
    raw_smtp.data.clear()
    for address in spellings:
        answer = client.post(RESET, json={"email": address})
        assert answer.status_code in (202, 429)
    deliver(app)
    to_victim = [r for r in raw_smtp.rcpt if r == ["victim@example.com"]]
    assert len(to_victim) <= 1, f"{len(to_victim)} reset mails in one inbox"


# --- A slow server and the lease ------------------------------------------


def test_a_tarpitting_server_gets_each_mail_once(make_app, raw_smtp, monkeypatch):
    """MAIL_TIMEOUT bounds each socket read, not a step: a server sending
    its greeting one byte every 0.6 s holds a try 9 s with MAIL_TIMEOUT=2
    (docs/configuration.md: "seconds an SMTP connection may wait for the
    server at each step"); nothing bounds the whole exchange nor renews the
    lease, so once the lease ends a second worker takes the same row and
    both send it. Time is scaled down: the lease of 120 s (LEASE_SECONDS)
    is 3 s here; with the defaults the same happens to any exchange a
    server stretches past 120 s. docs/api/mail.md: "two workers never take
    the same mail", "twice only when a worker dies"."""
    monkeypatch.setattr(outbox, "LEASE_SECONDS", 3)
    raw_smtp.greeting_pause = 0.6
    first = mail_app(make_app, raw_smtp, MAIL_TIMEOUT=2)
    second = mail_app(make_app, raw_smtp, MAIL_TIMEOUT=2)
    assert register(first.test_client(), "once@example.com").status_code == 201
    with workers_running(first, second):
        deadline = time.monotonic() + 20
        while len(raw_smtp.data) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(raw_smtp.data) <= 1, f"one mail sent {len(raw_smtp.data)} times"


# --- Control characters of an address -------------------------------------


def test_an_address_puts_no_line_break_in_the_headers(make_app, raw_smtp):
    """A quoted local part may hold \\x0b, \\x0c, \\x1c-\\x1e (marshmallow's
    Email allows \\001-\\037 but for TAB, LF, CR); the mailer's header
    folding (str.splitlines) turns them into CR LF inside the To header, so
    the mail goes out with a header section holding a line of the client's
    choosing ('To: "a' CR LF 'injected-text"@example.com'). The email
    package only refuses lines that look like "Name:" (and then the worker
    dies, see test 1). User input must not put line breaks into a mail's
    headers: the address should be refused (422)."""
    app = mail_app(make_app, raw_smtp)
    response = register(app.test_client(), '"a\x0c\x0cinjected-text"@example.com')
    assert response.status_code == 422, response.get_data(as_text=True)
    assert deliver(app) == 0
    assert raw_smtp.data == []


# --- A TLS handshake the server stretches ---------------------------------


def _dripping_tls_server(starttls):
    """A server that answers a TLS ClientHello with the start of a record,
    then one byte every 0.3 s: a handshake that never ends by itself."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run():
        connection, _ = listener.accept()
        listener.close()
        lines = connection.makefile("rb")
        with contextlib.suppress(OSError), connection:
            if starttls:
                connection.sendall(b"220 drip ESMTP\r\n")
                lines.readline()
                connection.sendall(b"250-drip\r\n250 STARTTLS\r\n")
                lines.readline()
                connection.sendall(b"220 go ahead\r\n")
            connection.recv(4096)  # the ClientHello
            connection.sendall(b"\x16\x03\x03\x3f\xff")  # a record of 16 KiB, to come
            for _ in range(100):
                connection.sendall(b"\x02")
                time.sleep(0.3)

    threading.Thread(target=run, daemon=True).start()
    return port


@pytest.mark.parametrize("starttls", [False, True], ids=["smtps", "starttls"])
def test_a_stretched_tls_handshake_ends_at_the_deadline(starttls):
    """``MAIL_TIMEOUT`` (here 5 s) bounds each wait, and the handshake as a
    whole; the deadline (1 s) ends it first, as it ends the rest."""
    port = _dripping_tls_server(starttls)

    def connect():
        context = ssl.create_default_context()
        if not starttls:
            return mail_smtp.SMTP_SSL("127.0.0.1", port, timeout=5, context=context)
        connection = mail_smtp.SMTP("127.0.0.1", port, timeout=5)
        connection.ehlo()
        return connection.starttls(context=context)

    started = time.monotonic()
    with mail_smtp.Deadline(1.0), pytest.raises((OSError, smtplib.SMTPException)):
        connect()
    assert time.monotonic() - started < 2.5
