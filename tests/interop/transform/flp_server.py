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

import sys

import zmq

from peer import Peer, parse_args, payload_of, upper


def main():
    args = parse_args(["endpoint", "name", "record"])
    server = Peer("flp-server", args)
    sock = server.open(zmq.ROUTER)
    sock.setsockopt(zmq.IDENTITY, args.endpoint.encode())
    sock.bind(args.endpoint)
    server.say("bound=%s name=%s" % (args.endpoint, args.name))

    def handle(frames):
        client, rest = frames[0], frames[1:]
        if rest == [b"PING"]:
            sock.send_multipart([client, b"PONG"])
        elif len(rest) >= 2:
            control, payload = rest[0], payload_of(rest[1:])
            server.request()
            reply = [args.name.encode() + b":"] + [upper(f) for f in payload]
            sock.send_multipart([client, control] + reply)
        else:
            server.say("malformed frames=%d" % len(frames))

    server.serve(handle)
    return server.finish()


if __name__ == "__main__":
    sys.exit(main())
