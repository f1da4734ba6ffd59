#!/usr/bin/env python3
"""A minimal 7/MDP (MDP/0.1) echo worker, written from the RFC text with pyzmq only.

It shares no code with bosun: it is the independent peer of bosun's interop tests
(tests/interop_pyzmq.rs).

usage: mdp_worker.py ENDPOINT SERVICE COUNT [--heartbeat MS] [--liveness N]
                     [--max-seconds S] [--min-seconds S]

One DEALER socket connected to the broker at ENDPOINT:
  * sends READY        [""][MDPW01][0x01][SERVICE] on every new socket;
  * answers REQUEST    [""][MDPW01][0x02][client][""][body...]
    with REPLY         [""][MDPW01][0x03][client][""][body...] (the body echoed unchanged);
  * sends HEARTBEAT    [""][MDPW01][0x04] every --heartbeat ms (default 2500);
  * counts any command from the broker as a sign of life; after --liveness (default 3)
    silent intervals it closes the socket and starts over on a new one;
  * on DISCONNECT      [""][MDPW01][0x05] closes the socket, opens a new one and sends
    READY again (RFC 7: "it MUST close its socket, and reconnect ... on a new socket");
  * at exit sends DISCONNECT.

A request from a bosun client ends with bosun's metadata frame, which the worker echoes
like any other frame. The worker also reads that frame by bosun's published layout
(version 1; the table at the top of src/proto/envelope.rs) and counts the requests that
carry a valid one (`bosun_meta`) and those whose last frame starts with the magic
`FF 42 53 4E` but breaks the layout (`bad_meta`).

It exits on its own once it has handled COUNT requests (COUNT 0: no limit) and has run
--min-seconds (default 0), or after --max-seconds (default 15) in any case; SIGTERM ends
it at once (it still sends DISCONNECT and prints its done line).

Output (stdout), one line each, machine-checkable:
    worker ready n=K service=NAME           (READY sent on socket number K, from 1)
    worker request n=N client=HEX frames=K meta=yes|no body=TEXT
                                            (request number N handled: K body frames,
                                            bosun metadata or not, the payload text)
    worker disconnect-received              (the broker sent DISCONNECT)
    worker broker-silent                    (liveness ran out)
    worker malformed frames=...             (a message that breaks 7/MDP, dropped)
    worker done handled=N heartbeats_in=H disconnects_in=D silences=S malformed=M readies=R
                bosun_meta=B bad_meta=X
"""

import argparse
import signal
import sys
import time

import zmq

WORKER = b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"

# bosun's metadata frame, layout version 1 (all integers big-endian):
#   0 magic FF 42 53 4E | 4 version | 5 status | 6 flags | 7 fixed length (44)
#   8 id (16, UUID v7) | 24 attempt (4, from 1) | 28 created ms (8) | 36 deadline ms (8, 0 = none)
#   fixed length: header count (2), then per header key length (2), key, value length (4), value
BOSUN_MAGIC = b"\xffBSN"
BOSUN_FIXED = 44


def say(line):
    print(line, flush=True)


def text(frame):
    return frame.decode("utf-8", "backslashreplace")


def bosun_meta(frame):
    """The fields of `frame` read as a bosun version-1 metadata frame of a request, or
    None when it breaks that layout. Strict: every byte must be accounted for."""
    if len(frame) < BOSUN_FIXED + 2 or frame[:4] != BOSUN_MAGIC:
        return None
    version, status, flags, fixed = frame[4], frame[5], frame[6], frame[7]
    if version != 1 or status != 0 or flags != 0 or fixed != BOSUN_FIXED:
        return None
    msg_id = frame[8:24]
    attempt = int.from_bytes(frame[24:28], "big")
    created = int.from_bytes(frame[28:36], "big")
    deadline = int.from_bytes(frame[36:44], "big")
    if msg_id[6] >> 4 != 7 or attempt < 1:
        return None  # not a UUID v7, or no attempt
    if abs(created - time.time() * 1000) > 3600 * 1000 or (deadline and deadline < created):
        return None
    count = int.from_bytes(frame[44:46], "big")
    at, headers = 46, {}
    for _ in range(count):
        if at + 2 > len(frame):
            return None
        klen = int.from_bytes(frame[at : at + 2], "big")
        key, at = frame[at + 2 : at + 2 + klen], at + 2 + klen
        if at + 4 > len(frame):
            return None
        vlen = int.from_bytes(frame[at : at + 4], "big")
        value, at = frame[at + 4 : at + 4 + vlen], at + 4 + vlen
        if at > len(frame):
            return None
        try:
            headers[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if at != len(frame):
        return None
    return dict(id=msg_id.hex(), attempt=attempt, created=created, deadline=deadline, headers=headers)


class Worker:
    def __init__(self, ctx, endpoint, service, heartbeat, liveness):
        self.ctx = ctx
        self.endpoint = endpoint
        self.service = service
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.sock = None
        self.stats = dict(
            handled=0, heartbeats_in=0, disconnects_in=0, silences=0, malformed=0, readies=0, bosun_meta=0, bad_meta=0
        )
        self.last_heard = 0.0
        self.next_heartbeat = 0.0

    def send(self, frames):
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            say("worker send-dropped command=%s" % frames[2].hex())

    def open(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)
        self.send([b"", WORKER, READY, self.service])
        self.stats["readies"] += 1
        say("worker ready n=%d service=%s" % (self.stats["readies"], text(self.service)))
        now = time.monotonic()
        self.last_heard = now
        self.next_heartbeat = now + self.heartbeat

    def handle(self, frames):
        if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
            return self.malformed(frames)
        command = frames[2]
        if command == REQUEST:
            if len(frames) < 5 or frames[4] != b"":
                return self.malformed(frames)
            client, body = frames[3], frames[5:]
            self.stats["handled"] += 1
            payload, meta = body, None
            if body and body[-1].startswith(BOSUN_MAGIC):
                meta = bosun_meta(body[-1])
                if meta is None:
                    self.stats["bad_meta"] += 1
                else:
                    self.stats["bosun_meta"] += 1
                    payload = body[:-1]
            say(
                "worker request n=%d client=%s frames=%d meta=%s body=%s"
                % (
                    self.stats["handled"],
                    client.hex(),
                    len(body),
                    "no" if meta is None else "yes",
                    text(b"".join(payload)),
                )
            )
            self.send([b"", WORKER, REPLY, client, b""] + body)
        elif command == HEARTBEAT and len(frames) == 3:
            self.stats["heartbeats_in"] += 1
        elif command == DISCONNECT and len(frames) == 3:
            self.stats["disconnects_in"] += 1
            say("worker disconnect-received")
            self.open()
            return
        else:
            return self.malformed(frames)
        self.last_heard = time.monotonic()

    def malformed(self, frames):
        self.stats["malformed"] += 1
        say("worker malformed frames=%r" % (frames,))

    def close(self):
        if self.sock is not None:
            self.send([b"", WORKER, DISCONNECT])
            self.sock.close(500)
            self.sock = None


class Stop(Exception):
    """Raised by the SIGTERM handler, so that even a blocked poll ends at once."""


def on_sigterm(_signum, _frame):
    raise Stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("service")
    p.add_argument("count", type=int)
    p.add_argument("--heartbeat", type=int, default=2500, help="milliseconds")
    p.add_argument("--liveness", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--min-seconds", type=float, default=0.0)
    args = p.parse_args()
    if args.heartbeat <= 0 or args.liveness <= 0 or args.count < 0:
        p.error("--heartbeat and --liveness must be positive, COUNT not negative")
    signal.signal(signal.SIGTERM, on_sigterm)
    start = time.monotonic()
    hard_end = start + args.max_seconds
    soft_end = start + args.min_seconds
    heartbeat = args.heartbeat / 1000.0
    ctx = zmq.Context()
    w = Worker(ctx, args.endpoint, args.service.encode(), heartbeat, args.liveness)
    w.open()
    try:
        while True:
            now = time.monotonic()
            if now >= hard_end:
                say("worker time-limit")
                break
            if args.count and w.stats["handled"] >= args.count and now >= soft_end:
                break
            wake = min(w.next_heartbeat, hard_end)
            if args.count and w.stats["handled"] >= args.count:
                wake = min(wake, soft_end)
            if w.sock.poll(max(1, int((wake - now) * 1000) + 1), zmq.POLLIN):
                # Drain what is there, a bounded number at a time.
                for _ in range(1000):
                    try:
                        frames = w.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    w.handle(frames)
            now = time.monotonic()
            if now - w.last_heard > heartbeat * args.liveness:
                w.stats["silences"] += 1
                say("worker broker-silent")
                w.open()
                continue
            if now >= w.next_heartbeat:
                w.send([b"", WORKER, HEARTBEAT])
                w.next_heartbeat = now + heartbeat
    except Stop:
        say("worker stopped by SIGTERM")
    finally:
        w.close()
        ctx.term()
    say(
        "worker done handled=%(handled)d heartbeats_in=%(heartbeats_in)d "
        "disconnects_in=%(disconnects_in)d silences=%(silences)d malformed=%(malformed)d "
        "readies=%(readies)d bosun_meta=%(bosun_meta)d bad_meta=%(bad_meta)d" % w.stats
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
