#!/usr/bin/python3
"""A real SMTP server for the email tests: Debian's python3-aiosmtpd on a
loopback port, STARTTLS with the certificate the test made, AUTH PLAIN/LOGIN
for one user, every accepted message written to a file in OUT_DIR.

usage: smtp_server.py PORT CERT KEY USER PASSWORD OUT_DIR
Prints "ready" once it listens; runs until killed.
"""
import asyncio, pathlib, ssl, sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, user, password, out = sys.argv[1:7]
out_dir = pathlib.Path(out)


class Store:
    def __init__(self):
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        path = out_dir / f"message-{self.n:04d}.eml"
        head = f"X-Envelope-From: {envelope.mail_from}\nX-Envelope-To: {','.join(envelope.rcpt_tos)}\n"
        path.write_bytes(head.encode() + envelope.content)
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == password.encode()
    return AuthResult(success=ok, handled=False)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Store(),
    hostname="127.0.0.1",
    port=int(port),
    tls_context=context,
    require_starttls=True,
    authenticator=authenticator,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
print("ready", flush=True)
try:
    asyncio.get_event_loop().run_forever()
finally:
    controller.stop()
