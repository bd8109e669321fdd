"""The commands an app sends its Redis cache, as its clients see them."""

import contextlib


@contextlib.contextmanager
def sent_commands(app, monkeypatch):
    """Collects ``(args, reply)`` for every command the app's cache sends
    meanwhile (``args[0]`` is the command's name)."""
    with app.app_context():
        backend = app.extensions["cache"][next(iter(app.extensions["cache"]))]
    clients = {id(c): c for c in (backend._read_client, backend._write_client)}
    sent = []
    with monkeypatch.context() as patch:
        for client in clients.values():
            original = client.execute_command

            def recording(*args, _original=original, **kwargs):
                reply = _original(*args, **kwargs)
                sent.append((args, reply))
                return reply

            patch.setattr(client, "execute_command", recording)
        yield sent


def reply_size(reply):
    """The bytes of a reply, however nested."""
    if isinstance(reply, bytes | str):
        return len(reply)
    if isinstance(reply, list | tuple):
        return sum(reply_size(part) for part in reply)
    return 0
