"""Which addresses mail reaches as they are written."""


def mailable(email):
    """Whether mail to ``email`` goes to exactly that address.

    The local part must be printable ASCII: the mailer does not speak
    SMTPUTF8 and would send another part as an RFC 2047 word, and a control
    character becomes a line break in the mail's headers. No RFC 2047 word
    (``=?...?=``) anywhere: the mailer decodes it and mails the decoded,
    other address. A non-ASCII domain must be IDNA's own spelling of it:
    IDNA maps others (a fullwidth ``e`` for ``e``) onto another domain, so
    two accounts would share one inbox and its limits (its ASCII form,
    ``xn--...``, and its Unicode form remain two spellings of one domain).
    """
    local, _, domain = email.rpartition("@")
    if "=?" in email or not all(" " < c < "\x7f" for c in local):
        return False
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return domain.isascii() or ascii_domain.encode("ascii").decode("idna") == domain
