"""A mail catcher for the development stack: an SMTP server that takes every
mail and keeps it, never sending anything on.

Standard library only, so it runs on the app's own image. Each mail is
written to MAIL_DIR (default /mail) as <n>.eml and a line naming it is
printed; in compose, read them with
`docker compose exec mailcatcher cat /app/instance/mail/1.eml`.
Speaks just enough SMTP for a client that sends: EHLO/HELO, MAIL, RCPT,
DATA, RSET, NOOP, QUIT; no STARTTLS (the app's MAIL_URL says
?starttls=off) and no authentication.
"""

import asyncio
import itertools
import os
import pathlib

MAIL_DIR = pathlib.Path(os.environ.get("MAIL_DIR", "/mail"))
PORT = int(os.environ.get("MAIL_PORT", "1025"))
MAX_BYTES = 10 * 1024 * 1024
numbers = itertools.count(1)


async def session(reader, writer):
    async def reply(line):
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    await reply("220 mailcatcher ready")
    sender, recipients = None, []
    while line := await reader.readline():
        command = line.decode("utf-8", "replace").strip()
        verb = command[:4].upper()
        if verb in ("EHLO", "HELO"):
            await reply(f"250 mailcatcher, SIZE {MAX_BYTES}")
        elif verb == "MAIL":
            sender, recipients = command[10:], []
            await reply("250 OK")
        elif verb == "RCPT":
            recipients.append(command[8:])
            await reply("250 OK")
        elif verb == "DATA":
            await reply("354 End data with <CR><LF>.<CR><LF>")
            lines = []
            while (data := await reader.readline()) not in (b".\r\n", b".\n", b""):
                lines.append(data[1:] if data.startswith(b"..") else data)
            number = next(numbers)
            path = MAIL_DIR / f"{number}.eml"
            path.write_bytes(b"".join(lines))
            print(f"mail {number} from {sender} to {', '.join(recipients)}", flush=True)
            await reply("250 OK: kept")
        elif verb == "RSET":
            sender, recipients = None, []
            await reply("250 OK")
        elif verb == "NOOP":
            await reply("250 OK")
        elif verb == "QUIT":
            await reply("221 Bye")
            break
        else:
            await reply("502 Command not implemented")
    writer.close()


async def main():
    MAIL_DIR.mkdir(parents=True, exist_ok=True)
    server = await asyncio.start_server(session, "0.0.0.0", PORT)  # noqa: S104
    print(f"mailcatcher on port {PORT}, mail kept in {MAIL_DIR}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
