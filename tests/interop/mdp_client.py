#!/usr/bin/env python3
"""A minimal 7/MDP (MDP/0.1) client, written from the RFC text with pyzmq only.

It shares no code with bosun: it is the independent peer of bosun's interop tests
(tests/interop_pyzmq.rs).

usage: mdp_client.py ENDPOINT SERVICE COUNT [--socket req|dealer] [--body TEXT]
                     [--timeout SECONDS] [--until TEXT] [--dup-window SECONDS]

Sends COUNT requests to SERVICE. The body of request n (from 1) is `req-n`, or TEXT
with --body.
  * REQ: one request at a time. The socket adds the empty frame 0; the client sends
    [MDPC01][service][body] and receives [MDPC01][service][body...].
  * DEALER: every request at once as [""][MDPC01][service][body]; replies come back
    as [""][MDPC01][service][body...] and are matched by their trailing `req-n`.
    After the last reply it keeps listening --dup-window seconds to catch duplicates.
  * --until TEXT (REQ only): repeat the request until the reply body is TEXT, within
    --timeout; for waiting on a condition such as `mmi.service` answering 200.

Every reply is checked frame by frame: the header must be MDPC01 and the service frame
must be the service asked for (otherwise the reply counts as malformed).

Output (stdout), one line each, machine-checkable:
    reply n=N service=NAME frames=K body=TEXT
    client done sent=S answered=A duplicates=D unexpected=U malformed=M missing=X
Exit status 0 iff every request got exactly one well-formed reply in time.
Every loop is bounded by COUNT and by --timeout (default 10 s overall).
"""

import argparse
import re
import sys
import time

import zmq

CLIENT = b"MDPC01"
TRAILING_NUMBER = re.compile(rb"req-(\d+)$")


def say(line):
    print(line, flush=True)


def text(frame):
    return frame.decode("utf-8", "backslashreplace")


def check_reply(frames, service):
    """The body frames of a well-formed reply (frames without the empty frame 0), or None."""
    if len(frames) < 3 or frames[0] != CLIENT or frames[1] != service:
        say("malformed frames=%r" % (frames,))
        return None
    return frames[2:]


def report(body_frames, n, service):
    body = b"".join(body_frames)
    say("reply n=%d service=%s frames=%d body=%s" % (n, text(service), len(body_frames), text(body)))


def run_req(ctx, args, service, deadline):
    stats = dict(sent=0, answered=0, duplicates=0, unexpected=0, malformed=0, missing=0)
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    try:
        for n in range(1, args.count + 1):
            body = args.body.encode() if args.body is not None else b"req-%d" % n
            attempts = 0
            while True:
                attempts += 1
                if attempts > 10000:
                    return stats
                sock.send_multipart([CLIENT, service, body])
                stats["sent"] += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sock.poll(int(remaining * 1000), zmq.POLLIN):
                    say("timeout n=%d" % n)
                    return stats
                frames = sock.recv_multipart()
                got = check_reply(frames, service)
                if got is None:
                    stats["malformed"] += 1
                    return stats
                reply_body = b"".join(got)
                if args.until is not None and reply_body != args.until.encode():
                    say("not-yet n=%d body=%s" % (n, text(reply_body)))
                    # Ask again in a little while. The REQ socket now expects a send, so
                    # polling it for input is a bounded wait that nothing ends early.
                    sock.poll(50, zmq.POLLIN)
                    stats["sent"] -= 1
                    continue
                if args.body is None and not reply_body.endswith(body):
                    say("unexpected n=%d body=%s" % (n, text(reply_body)))
                    stats["unexpected"] += 1
                stats["answered"] += 1
                report(got, n, service)
                break
    finally:
        sock.close(0)
    return stats


def run_dealer(ctx, args, service, deadline):
    stats = dict(sent=0, answered=0, duplicates=0, unexpected=0, malformed=0, missing=0)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    answered = set()
    try:
        for n in range(1, args.count + 1):
            body = args.body.encode() if args.body is not None else b"req-%d" % n
            sock.send_multipart([b"", CLIENT, service, body])
            stats["sent"] += 1
        quiet_until = None
        while True:
            now = time.monotonic()
            if now >= deadline or (quiet_until is not None and now >= quiet_until):
                break
            end = deadline if quiet_until is None else min(deadline, quiet_until)
            if not sock.poll(max(1, int((end - now) * 1000)), zmq.POLLIN):
                continue
            frames = sock.recv_multipart()
            if not frames or frames[0] != b"":
                say("malformed frames=%r" % (frames,))
                stats["malformed"] += 1
                continue
            got = check_reply(frames[1:], service)
            if got is None:
                stats["malformed"] += 1
                continue
            reply_body = b"".join(got)
            if args.body is not None:
                n = len(answered) + 1
            else:
                m = TRAILING_NUMBER.search(reply_body)
                if m is None or not 1 <= int(m.group(1)) <= args.count:
                    say("unexpected body=%s" % text(reply_body))
                    stats["unexpected"] += 1
                    continue
                n = int(m.group(1))
            if n in answered:
                say("duplicate n=%d body=%s" % (n, text(reply_body)))
                stats["duplicates"] += 1
                continue
            answered.add(n)
            stats["answered"] += 1
            report(got, n, service)
            if len(answered) == args.count and quiet_until is None:
                quiet_until = time.monotonic() + args.dup_window
    finally:
        sock.close(0)
    return stats


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("service")
    p.add_argument("count", type=int)
    p.add_argument("--socket", choices=["req", "dealer"], default="req")
    p.add_argument("--body")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--until")
    p.add_argument("--dup-window", type=float, default=0.3)
    args = p.parse_args()
    if args.until is not None and args.socket != "req":
        p.error("--until needs --socket req")
    if args.count < 0 or args.count > 100000:
        p.error("COUNT must be between 0 and 100000")
    service = args.service.encode()
    deadline = time.monotonic() + args.timeout
    ctx = zmq.Context()
    try:
        run = run_req if args.socket == "req" else run_dealer
        stats = run(ctx, args, service, deadline)
        stats["missing"] = args.count - stats["answered"]
    finally:
        ctx.term()
    say(
        "client done sent=%(sent)d answered=%(answered)d duplicates=%(duplicates)d "
        "unexpected=%(unexpected)d malformed=%(malformed)d missing=%(missing)d" % stats
    )
    ok = (
        stats["answered"] == args.count
        and stats["duplicates"] == 0
        and stats["unexpected"] == 0
        and stats["malformed"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
