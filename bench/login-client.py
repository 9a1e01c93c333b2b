#!/usr/bin/env python3
"""bench/login-client.py: the load of bench/logins.sh.

CLIENTS processes connect one after the other for SECONDS; each connection
does TLS (STARTTLS after the greeting, or implicit TLS), EHLO, AUTH PLAIN, one
message of about 1 KiB (MAIL, RCPT, DATA) and QUIT, as a phone or a script
does per message. A run lasts a fixed time rather than a fixed count, so a
server that takes 15 connections a second and one that takes 300 are both
measured over the same span.
With --resume each process offers the TLS session of its previous
connection (a client that reconnects); without it every handshake is full.
A `{i}` in USER becomes the process's number (0..CLIENTS-1): one account per
client, as one phone or script each; the sender is that user.

Prints one line: connections accepted errors seconds rate(accepted/s)
resumed first_error (resumed: handshakes that resumed a session). The clock runs from the moment every process is ready until the
last connection ends.
"""
import argparse
import base64
import multiprocessing
import smtplib
import ssl
import sys
import time

BODY = (
    "From: {user}\r\nTo: {rcpt}\r\nSubject: login bench\r\n\r\n"
    + ("x" * 70 + "\r\n") * 13
)


class Resuming:
    """An SSLContext stand-in for smtplib: offers the last session, if any."""

    def __init__(self, ctx, resume):
        self.ctx, self.resume, self.session = ctx, resume, None

    def wrap_socket(self, sock, server_hostname=None):
        session = self.session if self.resume else None
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname, session=session)


def one(args, tls, blob, body):
    if args.mode == "ssl":
        s = smtplib.SMTP_SSL(args.host, args.port, context=tls, timeout=60)
    else:
        s = smtplib.SMTP(args.host, args.port, timeout=60)
        s.ehlo("client.bench")
        s.starttls(context=tls)
    try:
        s.ehlo("client.bench")
        code, msg = s.docmd("AUTH", "PLAIN " + blob)
        if code != 235:
            raise RuntimeError(f"AUTH: {code} {msg!r}")
        for cmd, arg in (("MAIL", f"FROM:<{args.user}>"), ("RCPT", f"TO:<{args.rcpt}>")):
            code, msg = s.docmd(cmd, arg)
            if code != 250:
                raise RuntimeError(f"{cmd}: {code} {msg!r}")
        code, msg = s.data(body)
        if code != 250:
            raise RuntimeError(f"DATA: {code} {msg!r}")
        # TLS 1.3 tickets arrive after the handshake: read them before QUIT.
        tls.session = s.sock.session
        reused = s.sock.session_reused
        s.quit()
        return reused
    finally:
        s.close()


def worker(args, index, ready, go, start, results):
    args.user = args.user.replace("{i}", str(index))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = Resuming(ctx, args.resume)
    blob = base64.b64encode(f"\0{args.user}\0{args.password}".encode()).decode()
    body = BODY.format(user=args.user, rcpt=args.rcpt).encode()
    ready.release()
    go.wait()
    deadline = start.value + args.seconds
    ok, errors, first, reused = 0, 0, "", 0
    while time.monotonic() < deadline:
        try:
            reused += one(args, tls, blob, body)
            ok += 1
        except Exception as e:  # every failure counts; the first is shown
            errors += 1
            first = first or f"{type(e).__name__}: {e}"
    results.put((ok, errors, first, time.monotonic(), reused))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("mode", choices=["starttls", "ssl"])
    p.add_argument("clients", type=int)
    p.add_argument("seconds", type=float)
    p.add_argument("user")
    p.add_argument("password")
    p.add_argument("--rcpt", default="bob@remote.example")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()

    ready = multiprocessing.Semaphore(0)
    go = multiprocessing.Event()
    start = multiprocessing.Value("d", 0.0)
    results = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(args, i, ready, go, start, results))
             for i in range(args.clients)]
    for pr in procs:
        pr.start()
    for _ in procs:
        ready.acquire()
    # CLOCK_MONOTONIC is one clock for every process on Linux.
    start.value = time.monotonic()
    go.set()
    done = [results.get() for _ in procs]
    for pr in procs:
        pr.join()
    ok = sum(d[0] for d in done)
    errors = sum(d[1] for d in done)
    first = next((d[2] for d in done if d[2]), "-")
    seconds = max(d[3] for d in done) - start.value
    reused = sum(d[4] for d in done)
    print(f"{ok + errors} {ok} {errors} {seconds:.3f} {ok / seconds:.1f} {reused} {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
