#!/usr/bin/env python3
"""A 7/MDP (MDP/0.1) worker that TRANSFORMS requests: the reply is the frame "mdp:"
followed by every payload frame in upper case. Written from the RFC text and from the
metadata-frame table at the top of src/proto/envelope.rs, with pyzmq only.

usage: mdp_worker.py ENDPOINT SERVICE RECORD [--heartbeat MS] [--liveness N]
                     [--late-ms MS] [--max-seconds S]

One DEALER socket connected to the broker at ENDPOINT:
  * READY      [""][MDPW01][0x01][SERVICE], on every new socket;
  * REQUEST    [""][MDPW01][0x02][client][""][body...] is answered with
    REPLY      [""][MDPW01][0x03][client][""]["mdp:"][BODY...] (no metadata frame: this
    worker is foreign to bosun; a trailing body frame that starts FF 42 53 4E is bosun's
    metadata, which it ignores);
  * HEARTBEAT  [""][MDPW01][0x04] every --heartbeat ms (default 2500); any message from
    the broker is a sign of life; after --liveness (default 3) silent intervals, or on
    DISCONNECT [""][MDPW01][0x05], it starts over on a new socket.
  * --late-ms MS: the first time a payload arrives the worker sleeps MS before it
    answers (a slow service); later copies of the same payload are answered at once.

RECORD: every message received, one JSON line {"frames": [hex, ...]} per message.
stdout: `worker ready n=K`, `worker request n=N late=0|1`, `worker done handled=N`.
Exits after --max-seconds (default 60) or on SIGTERM.
"""

import argparse
import json
import signal
import sys
import time

import zmq

WORKER = b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
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
    ap.add_argument("service")
    ap.add_argument("record")
    ap.add_argument("--heartbeat", type=int, default=2500)
    ap.add_argument("--liveness", type=int, default=3)
    ap.add_argument("--late-ms", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    record = open(args.record, "w")
    ctx = zmq.Context()
    sock = None
    readies = handled = 0
    seen = set()
    interval = args.heartbeat / 1000.0
    end = time.monotonic() + args.max_seconds

    def send(frames):
        sock.send_multipart(frames)

    def open_socket():
        nonlocal sock, readies
        if sock is not None:
            sock.close(0)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 2000)
        sock.connect(args.endpoint)
        send([b"", WORKER, READY, args.service.encode()])
        readies += 1
        say("worker ready n=%d" % readies)

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
            if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
                say("worker malformed")
                continue
            command = frames[2]
            if command == REQUEST and len(frames) >= 5 and frames[4] == b"":
                client = frames[3]
                payload = payload_of(frames[5:])
                late = args.late_ms > 0 and tuple(payload) not in seen
                seen.add(tuple(payload))
                handled += 1
                say("worker request n=%d late=%d" % (handled, int(late)))
                if late:
                    time.sleep(args.late_ms / 1000.0)
                send([b"", WORKER, REPLY, client, b"", b"mdp:"] + [upper(f) for f in payload])
            elif command == HEARTBEAT:
                pass
            elif command == DISCONNECT:
                say("worker disconnect-received")
                open_socket()
            else:
                say("worker malformed command=%s" % command.hex())
        now = time.monotonic()
        if now - heard > interval * args.liveness:
            say("worker broker-silent")
            open_socket()
            heard = now
        if now >= next_beat:
            send([b"", WORKER, HEARTBEAT])
            next_beat = now + interval
    try:
        send([b"", WORKER, DISCONNECT])
    except zmq.ZMQError:
        pass
    say("worker done handled=%d" % handled)
    sock.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
