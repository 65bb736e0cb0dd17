#!/usr/bin/python3
"""A real SMTP server for the e-mail channel tests, built on aiosmtpd (python3-aiosmtpd).

serve: listens on 127.0.0.1:PORT and
  - requires STARTTLS (--cert/--key), or implicit TLS with --smtps, or neither with --plain;
  - requires AUTH (PLAIN or LOGIN, offered only over TLS) as --user/--password, unless --plain;
  - stores every accepted message, byte for byte as received after DATA, in the Maildir --maildir;
  - refuses chosen recipients: "tempfail-N@..." answers 451 for its first N attempts (a counter
    per address), then accepts; "reject@..." always answers 550;
  - with --refuse REPLY, answers every MAIL FROM with REPLY (e.g. "554 5.3.2 not accepting mail"),
    as a provider that is down;
  - appends one JSON line per event (auth, mail, rcpt, data) to --log.

parse FILE: prints a stored message as JSON, decoded by Python's email package (policy default):
  headers (decoded), raw_headers (as in the file), leaf parts with their decoded content, defects,
  whether every line ends in CRLF, and the longest line.
"""
import argparse
import email
import email.policy
import json
import mailbox
import re
import signal
import ssl
import sys
import threading
import time

TEMPFAIL = re.compile(r"^tempfail-(\d+)@", re.IGNORECASE)


def serve(args):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = mailbox.Maildir(args.maildir, create=True)
    log = open(args.log, "a", buffering=1)
    attempts = {}
    lock = threading.Lock()

    def record(**event):
        event["time"] = time.time()  # when the server saw it, for rate checks
        with lock:
            log.write(json.dumps(event) + "\n")

    class Handler:
        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            record(event="mail", peer_port=session.peer[1], address=address, tls=bool(session.ssl),
                   authenticated=bool(session.authenticated), reply=args.refuse or "250 OK")
            if args.refuse:
                return args.refuse
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 OK"

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            with lock:
                n = attempts[address.lower()] = attempts.get(address.lower(), 0) + 1
            m = TEMPFAIL.match(address)
            if m and n <= int(m.group(1)):
                reply = "451 4.3.0 try later"
            elif address.lower().startswith("reject@"):
                reply = "550 5.1.1 no such user"
            else:
                envelope.rcpt_tos.append(address)
                reply = "250 OK"
            record(event="rcpt", peer_port=session.peer[1], address=address, attempt=n, reply=reply)
            return reply

        async def handle_DATA(self, server, session, envelope):
            key = box.add(envelope.original_content)
            record(event="data", peer_port=session.peer[1], key=key, mail_from=envelope.mail_from,
                   rcpt=envelope.rcpt_tos, size=len(envelope.original_content))
            return "250 2.0.0 Ok: queued as " + key

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == args.user.encode()
              and auth_data.password == args.password.encode())
        login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else None
        record(event="auth", peer_port=session.peer[1], mechanism=mechanism, login=login, ok=ok)
        return AuthResult(success=ok, handled=False)

    kwargs = dict(hostname="127.0.0.1", port=args.port, server_hostname="localhost", ready_timeout=10,
                  decode_data=False)
    if not args.plain:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)
        if args.smtps:
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; here the whole
            # connection is TLS from the first byte.
            kwargs.update(ssl_context=ctx, auth_require_tls=False)
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
    controller = Controller(Handler(), **kwargs)
    controller.start()
    print("listening on 127.0.0.1:%d" % args.port, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    controller.stop()


def parse(path):
    data = open(path, "rb").read()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    raw = email.message_from_bytes(data, policy=email.policy.compat32)
    lines = data.split(b"\r\n")
    out = {
        "headers": {k: str(v) for k, v in msg.items()},
        "header_names": [k for k, _ in msg.items()],
        "raw_headers": [[k, v] for k, v in raw.items()],
        "content_type": msg.get_content_type(),
        "crlf_only": b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b""),
        "max_line": max(len(line) for line in lines),
        "defects": [repr(d) for part in msg.walk() for d in part.defects],
        "parts": [],
    }
    for part in msg.walk():
        if part.is_multipart():
            continue
        out["parts"].append({
            "content_type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "transfer_encoding": part.get("Content-Transfer-Encoding"),
            "content": part.get_content(),
        })
    json.dump(out, sys.stdout, ensure_ascii=False)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "parse":
        parse(sys.argv[2])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--maildir", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user", default="herald")
    p.add_argument("--password", default="secret")
    p.add_argument("--smtps", action="store_true", help="implicit TLS instead of STARTTLS")
    p.add_argument("--plain", action="store_true", help="no TLS and no AUTH at all")
    p.add_argument("--refuse", help="answer every MAIL FROM with this reply, e.g. '554 5.3.2 not accepting mail'")
    serve(p.parse_args())


if __name__ == "__main__":
    main()
