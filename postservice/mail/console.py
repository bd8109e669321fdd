"""Development's mail "server": each mail becomes one log line.

Without ``MAIL_URL`` (never in production, which refuses to start so) mail
is not sent: the line names the recipient, the subject and the links of the
mail, so the owner of a development server can open them. One line, as
every line of the log is (``ops.logs``), in text and in JSON alike. This is
the only place a token is written where a log goes, and only here.
"""

import logging
import re

from flask_mailman.backends.base import BaseEmailBackend

log = logging.getLogger("postservice.mail.console")
LINK = re.compile(r"https?://[^\s<>\"]+")


class EmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        for message in email_messages:
            links = " ".join(dict.fromkeys(LINK.findall(message.body)))
            log.info(
                "mail (no MAIL_URL: not sent) to %s: %r %s",
                ", ".join(message.to),
                message.subject,
                links,
            )
        return len(email_messages)
