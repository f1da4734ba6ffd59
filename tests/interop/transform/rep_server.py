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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bind")
    ap.add_argument("record")
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    record = open(args.record, "w")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    sock.bind(args.bind)
    say("rep-server bound=%s" % sock.getsockopt_string(zmq.LAST_ENDPOINT))
    handled = 0
    end = time.monotonic() + args.max_seconds
    while not stop and time.monotonic() < end:
        if not sock.poll(100, zmq.POLLIN):
            continue
        frames = sock.recv_multipart()
        record.write(json.dumps({"frames": [f.hex() for f in frames]}) + "\n")
        record.flush()
        handled += 1
        say("rep-server request n=%d" % handled)
        sock.send_multipart([b"reply:"] + payload_of(frames))
    say("rep-server done handled=%d" % handled)
    sock.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
