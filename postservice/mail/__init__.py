"""Mail: single-use tokens, the outbox, and the worker that delivers it.

- ``tokens``: random tokens for password resets and email checks, stored
  as their SHA-256, single use.
- ``messages``: subjects and the Jinja templates of the bodies.
- ``outbox``: mail written in the transaction of what it tells about, and
  claimed by workers with a lease.
- ``delivery``: the worker (``flask mail deliver``), SMTP through
  Flask-Mailman (``smtp``), retries with backoff.
- ``commands``: ``flask mail deliver|status|retry``.

The account rules that use them are in ``postservice.users.service``.
"""

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from postservice.extensions import db, mail
from postservice.mail import outbox
from postservice.ops import health


class _OutboxCollector:
    """The outbox read at scrape time: any process sees every worker's mail."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        # Within /readyz's deadline: a hung database must not hold the scrape.
        state = health.within_deadline(self.app, _outbox_state, None)
        if state is None:
            return  # postservice_dependency_up says the database is down
        waiting, failed, age = state
        yield GaugeMetricFamily(
            "postservice_mail_outbox_waiting",
            "Mails in the outbox still to be sent (due now, later, or in hand).",
            value=waiting,
        )
        yield GaugeMetricFamily(
            "postservice_mail_outbox_failed",
            "Mails set aside after MAIL_MAX_ATTEMPTS failed tries.",
            value=failed,
        )
        yield GaugeMetricFamily(
            "postservice_mail_outbox_oldest_age_seconds",
            "Age of the oldest mail still to be sent; 0 when none waits.",
            value=age,
        )


def _outbox_state():
    try:
        return outbox.state()
    except SQLAlchemyError:
        return None
    finally:
        db.session.remove()


def init_app(app):
    mail.init_app(app)
    app.extensions["metrics"].registry.register(_OutboxCollector(app))
