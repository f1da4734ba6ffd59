#!/usr/bin/env python3
"""A plain REP server that TRANSFORMS requests: the reply is the frame "reply:" followed
by the payload frames. Foreign to bosun: written with pyzmq from the ZeroMQ REQ/REP
rules and the metadata-frame table at the top of src/proto/envelope.rs. A trailing
request frame that starts FF 42 53 4E is bosun's metadata; this server drops it and
replies with the transformed payload only.

usage: rep_server.py BIND RECORD [--max-seconds S]

RECORD: every message received, one JSON line {"frames": [hex, ...]} per message.
stdout: `rep-server bound=ENDPOINT` once bound, `rep-server request n=N` per request.
Exits after --max-seconds (default 60) or on SIGTERM.
"""

import sys

import zmq

from peer import Peer, parse_args, payload_of


def main():
    args = parse_args(["bind", "record"])
    server = Peer("rep-server", args)
    sock = server.open(zmq.REP)
    sock.bind(args.bind)
    server.say("bound=%s" % sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def handle(frames):
        server.request()
        sock.send_multipart([b"reply:"] + payload_of(frames))

    server.serve(handle)
    return server.finish()


if __name__ == "__main__":
    sys.exit(main())
