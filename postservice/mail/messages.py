"""The mails' words: subjects, and plain-text and HTML bodies from the
Jinja templates in ``postservice/mail/templates``.

The package's own environment, not the app's: the templates travel with
the package and the HTML is escaped whatever the app configures.
"""

import functools
from urllib.parse import urlencode

from flask import current_app
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from postservice.mail import tokens

SUBJECTS = {
    tokens.PASSWORD_RESET: "Reset your postservice password",
    tokens.VERIFY_EMAIL: "Confirm your email address for postservice",
}
# The page of the site each link opens; the token is its query.
PAGES = {
    tokens.PASSWORD_RESET: "/reset-password",
    tokens.VERIFY_EMAIL: "/verify-email",
}


@functools.cache
def _environment():
    return Environment(
        loader=PackageLoader("postservice.mail", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def link(kind, token):
    """``{PUBLIC_URL}/reset-password?token=...`` or ``.../verify-email?...``."""
    query = urlencode({"token": token})
    return f"{current_app.config['PUBLIC_URL']}{PAGES[kind]}?{query}"


def render(kind, token):
    """``(subject, text, html)`` of the mail of ``kind`` carrying ``token``."""
    config = current_app.config
    context = {
        "link": link(kind, token),
        "minutes": config["PASSWORD_RESET_TOKEN_EXPIRES"] // 60,
        "hours": config["EMAIL_VERIFICATION_TOKEN_EXPIRES"] // 3600,
    }
    environment = _environment()
    text = environment.get_template(f"{kind}.txt").render(context)
    html = environment.get_template(f"{kind}.html").render(context)
    return SUBJECTS[kind], text, html
