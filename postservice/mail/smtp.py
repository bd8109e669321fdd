"""Flask-Mailman's SMTP backend, with STARTTLS whenever the server offers it.

Flask-Mailman (like Django, whose backend it is) either always asks for
STARTTLS (``MAIL_USE_TLS``, and fails against a server without it) or never
does. ``smtp://`` URLs here mean: encrypt when the server can, with the
certificate checked; ``?starttls=off`` sends in the clear, and ``smtps://``
is TLS from the first byte (``config.parse_mail_url``).
"""

import smtplib
import ssl

from flask import current_app
from flask_mailman.backends import smtp
from flask_mailman.utils import DNS_NAME


class EmailBackend(smtp.EmailBackend):
    def open(self):
        if self.connection or self.use_ssl:
            return super().open()
        params = {"local_hostname": DNS_NAME.get_fqdn()}
        if self.timeout is not None:
            params["timeout"] = self.timeout
        connection = smtplib.SMTP(self.host, self.port, **params)
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
