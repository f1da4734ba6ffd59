#!/usr/bin/env python3
"""A 6/PPP (Paranoid Pirate) worker that TRANSFORMS requests: the reply is one frame,
"ppp:" followed by the payload in upper case. Written from the RFC text and from the
metadata-frame table at the top of src/proto/envelope.rs, with pyzmq only.

usage: ppp_worker.py ENDPOINT RECORD [--heartbeat MS] [--liveness N] [--max-seconds S]

One DEALER socket connected to the queue at ENDPOINT:
  * READY      one frame 0x01, first on every new socket;
  * HEARTBEAT  one frame 0x02, sent every --heartbeat ms (default 1000); any message from
    the queue is a sign of life; after --liveness (default 3) silent intervals the worker
    starts over on a new socket with READY;
  * REQUEST    [address...][""][body...] is answered with
    REPLY      [address...][""]["ppp:" + BODY] (no metadata frame: this worker is foreign
    to bosun; a trailing body frame that starts FF 42 53 4E is bosun's metadata, which it
    ignores).

RECORD: every message received, one JSON line {"frames": [hex, ...]} per message.
stdout: `ppp-worker ready n=K`, `ppp-worker request n=N`, `ppp-worker done handled=N`.
Exits after --max-seconds (default 60) or on SIGTERM.
"""

import argparse
import json
import signal
import sys
import time

import zmq

READY, HEARTBEAT = b"\x01", b"\x02"
META_MAGIC = b"\xffBSN"


def say(line):
    print(line, flush=True)


def payload_of(body):
    """The body without bosun's trailing metadata frame, if it has one."""
    if body and body[-1].startswith(META_MAGIC):
        return body[:-1]
    return body


def upper(frame):
    try:
        return frame.decode("utf-8").upper().encode("utf-8")
    except UnicodeDecodeError:
        return frame.upper()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("record")
    ap.add_argument("--heartbeat", type=int, default=1000)
    ap.add_argument("--liveness", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    record = open(args.record, "w")
    ctx = zmq.Context()
    sock = None
    readies = handled = 0
    interval = args.heartbeat / 1000.0
    end = time.monotonic() + args.max_seconds

    def open_socket():
        nonlocal sock, readies
        if sock is not None:
            sock.close(0)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 2000)
        sock.connect(args.endpoint)
        sock.send_multipart([READY])
        readies += 1
        say("ppp-worker ready n=%d" % readies)

    open_socket()
    heard = time.monotonic()
    next_beat = heard + interval
    while not stop and time.monotonic() < end:
        wait = max(0.0, next_beat - time.monotonic())
        if sock.poll(int(wait * 1000) + 1, zmq.POLLIN):
            frames = sock.recv_multipart()
            record.write(json.dumps({"frames": [f.hex() for f in frames]}) + "\n")
            record.flush()
            heard = time.monotonic()
            if frames == [HEARTBEAT]:
                pass
            elif b"" in frames:
                split = frames.index(b"") + 1
                address, body = frames[:split], frames[split:]
                payload = payload_of(body)
                handled += 1
                say("ppp-worker request n=%d" % handled)
                sock.send_multipart(address + [b"ppp:" + b"".join(upper(f) for f in payload)])
            else:
                say("ppp-worker malformed frames=%d" % len(frames))
        now = time.monotonic()
        if now - heard > interval * args.liveness:
            say("ppp-worker queue-silent")
            open_socket()
            heard = now
        if now >= next_beat:
            sock.send_multipart([HEARTBEAT])
            next_beat = now + interval
    say("ppp-worker done handled=%d" % handled)
    sock.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
