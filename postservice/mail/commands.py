"""``flask mail ...``: the delivery worker and the operator's view of the outbox."""

import logging
import signal
import time

import click
from flask import current_app

from postservice.mail import delivery, outbox, tokens
from postservice.ops import metrics
from postservice.ops.cli import MaintenanceGroup

log = logging.getLogger("postservice.mail")
mail_cli = MaintenanceGroup("mail", help="The outbox: deliver mail, see what is stuck.")


@mail_cli.command("deliver")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this worker's metrics (mails sent, failed) on this port.",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="...on this address."
)
def deliver(once, metrics_port, metrics_host):
    """Send the outbox's mail through MAIL_URL until SIGTERM or SIGINT.

    The mail in hand when the signal comes is finished first. Several
    workers may run at once: each mail is taken by one of them.
    """
    app = current_app._get_current_object()
    worker = delivery.Worker(app)
    if once:
        click.echo(f"handled {worker.deliver_due()} mail(s)")
        return
    listener = None
    if metrics_port is not None:
        try:
            listener = metrics.start_listener(app, metrics_host, metrics_port)
        except OSError as e:  # in use, not this machine's, no such host
            raise click.ClickException(
                f"--metrics-host {metrics_host} --metrics-port {metrics_port} "
                f"cannot be used: {e}"
            ) from None

    def stop(signum, frame):
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("mail worker %s started", worker.worker_id)
    worker.run()
    log.info("mail worker %s stopped", worker.worker_id)
    if listener is not None:
        listener.shutdown()
        listener.server_close()


@mail_cli.command("status")
def status():
    """How many mails wait, how old the oldest is, and the oldest ones."""
    waiting, failed, age = outbox.state()
    click.echo(f"waiting: {waiting}, set aside: {failed}, oldest waiting: {age} s")
    now = int(time.time())
    for row in outbox.stuck():
        state = "set aside" if row.failed_at is not None else "waiting"
        due = max(0, row.due_at - now)
        click.echo(
            f"  mail {row.id} {row.kind}: {state}, {now - row.created_at} s old, "
            f"{row.attempts} tries, next in {due} s; {row.last_error or '-'}"
        )


@mail_cli.command("retry")
def retry():
    """Put every mail set aside after MAIL_MAX_ATTEMPTS back in line."""
    click.echo(f"{outbox.retry_failed()} mail(s) back in line")


@mail_cli.command("purge-tokens")
def purge_tokens():
    """Forget mailed tokens that expired, or were used over a day ago."""
    click.echo(f"purged {tokens.purge_expired()} token(s)")
