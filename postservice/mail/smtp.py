"""Flask-Mailman's SMTP backend, with STARTTLS whenever the server offers it.

Flask-Mailman (like Django, whose backend it is) either always asks for
STARTTLS (``MAIL_USE_TLS``, and fails against a server without it) or never
does. ``smtp://`` URLs here mean: encrypt when the server can, with the
certificate checked; ``?starttls=off`` sends in the clear, and ``smtps://``
is TLS from the first byte (``config.parse_mail_url``).
"""

import contextlib
import smtplib
import socket
import ssl
import threading

from flask import current_app
from flask_mailman.backends import smtp
from flask_mailman.utils import DNS_NAME

_current = threading.local()


class Deadline:
    """The whole exchange of one mail within ``seconds``.

    ``MAIL_TIMEOUT`` bounds each wait for the server, not a step: a server
    answering a byte at a time would hold a mail for as long as it likes,
    past the lease of its outbox row, and another worker would send it too.
    Past the deadline the connection's sockets are shut, and the step under
    way fails like a server that hung up.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.sockets = []
        self.expired = False
        self.lock = threading.Lock()

    def __enter__(self):
        self.timer = threading.Timer(self.seconds, self._expire)
        self.timer.daemon = True
        self.timer.start()
        _current.deadline = self
        return self

    def __exit__(self, *exc_info):
        self.timer.cancel()
        _current.deadline = None

    def watch(self, sock):
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self):
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                _shut(sock)


def _shut(sock):
    with contextlib.suppress(OSError):  # closed already, or never connected
        sock.shutdown(socket.SHUT_RDWR)


def _watch(sock):
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _WatchedContext:
    """An SSL context whose sockets are the deadline's before their
    handshake, which a server may stretch as it likes too."""

    def __init__(self, context):
        self.context = context

    def wrap_socket(self, sock, **kwargs):
        wrapped = self.context.wrap_socket(
            sock, do_handshake_on_connect=False, **kwargs
        )
        _watch(wrapped)
        wrapped.do_handshake()
        return wrapped


class SMTP(smtplib.SMTP):
    """Each socket of the connection is the deadline's: the plain one from
    before the server's greeting, the one of STARTTLS before its handshake."""

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        _watch(sock)
        return sock

    def starttls(self, *, context=None):
        return super().starttls(
            context=_WatchedContext(context or ssl.create_default_context())
        )


class SMTP_SSL(smtplib.SMTP_SSL):
    """TLS from the first byte, the handshake within the deadline."""

    def __init__(self, *args, context=None, **kwargs):
        context = _WatchedContext(context or ssl.create_default_context())
        super().__init__(*args, context=context, **kwargs)


class EmailBackend(smtp.EmailBackend):
    @property
    def connection_class(self):
        return SMTP_SSL if self.use_ssl else SMTP

    def open(self):
        if self.connection or self.use_ssl:
            return super().open()
        params = {"local_hostname": DNS_NAME.get_fqdn()}
        if self.timeout is not None:
            params["timeout"] = self.timeout
        connection = self.connection_class(self.host, self.port, **params)
        try:
            connection.ehlo()
            if current_app.config.get("MAIL_STARTTLS") and connection.has_extn(
                "starttls"
            ):
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            if self.username and self.password:
                connection.login(self.username, self.password)
        except BaseException:
            connection.close()
            raise
        self.connection = connection
        return True
