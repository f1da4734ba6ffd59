#!/usr/bin/env python3
"""A 10/FLP (Freelance) server that TRANSFORMS requests: the reply is the client's
control frame, then the frame "NAME:", then every payload frame in upper case. Written
from the RFC text and from the metadata-frame table at the top of src/proto/envelope.rs,
with pyzmq only.

usage: flp_server.py ENDPOINT NAME RECORD [--max-seconds S]

One ROUTER socket whose identity is ENDPOINT (its public endpoint, as the RFC asks),
bound at ENDPOINT. It speaks only when spoken to:
  * ["PING"]                  -> ["PONG"]
  * [control][body...]        -> [control]["NAME:"][BODY...] (no metadata frame: this
    server is foreign to bosun; a trailing body frame that starts FF 42 53 4E is bosun's
    metadata, which it ignores).
(The client's identity frame, which the ROUTER socket adds, is left out above.)

RECORD: every message received (the client identity frame included), one JSON line
{"frames": [hex, ...]} per message.
stdout: `flp-server bound=ENDPOINT name=NAME`, `flp-server request n=N`.
Exits after --max-seconds (default 60) or on SIGTERM.
"""

import argparse
import json
import signal
import sys
import time

import zmq

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
    ap.add_argument("name")
    ap.add_argument("record")
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    record = open(args.record, "w")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    sock.setsockopt(zmq.IDENTITY, args.endpoint.encode())
    sock.bind(args.endpoint)
    say("flp-server bound=%s name=%s" % (args.endpoint, args.name))
    handled = 0
    end = time.monotonic() + args.max_seconds
    while not stop and time.monotonic() < end:
        if not sock.poll(100, zmq.POLLIN):
            continue
        frames = sock.recv_multipart()
        record.write(json.dumps({"frames": [f.hex() for f in frames]}) + "\n")
        record.flush()
        client, rest = frames[0], frames[1:]
        if rest == [b"PING"]:
            sock.send_multipart([client, b"PONG"])
        elif len(rest) >= 2:
            control, payload = rest[0], payload_of(rest[1:])
            handled += 1
            say("flp-server request n=%d" % handled)
            reply = [args.name.encode() + b":"] + [upper(f) for f in payload]
            sock.send_multipart([client, control] + reply)
        else:
            say("flp-server malformed frames=%d" % len(frames))
    say("flp-server done handled=%d" % handled)
    sock.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
