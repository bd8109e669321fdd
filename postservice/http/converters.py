"""Path converters: how an id is written in a URL."""

from werkzeug.routing import IntegerConverter


class IdConverter(IntegerConverter):
    """A row id in a path, ``<id(max=...):name>``: ASCII digits only.

    werkzeug's ``int`` matches ``\\d``, which in a str pattern is any
    decimal digit of any script, and ``int()`` reads them all: without this
    ``/get-post/١٢`` (Arabic-Indic digits) would name post 12. An id is
    written one way, as the document's ``integer`` says and as the page
    parameters are read (``posts.schemas.ASCII_DIGITS``); anything else
    matches no route and is a 404. Documented as werkzeug's ``int`` is
    (flask-smorest follows the class's ancestors).
    """

    regex = r"[0-9]+"
