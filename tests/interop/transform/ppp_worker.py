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

import sys

from peer import Worker, parse_args, payload_of, upper

READY, HEARTBEAT = b"\x01", b"\x02"


def main():
    args = parse_args(
        ["endpoint", "record"], [("--heartbeat", int, 1000), ("--liveness", int, 3)]
    )
    worker = Worker(
        "ppp-worker", args, ready=[READY], heartbeat=[HEARTBEAT], silent="queue-silent"
    )

    def handle(frames):
        if frames == [HEARTBEAT]:
            pass
        elif b"" in frames:
            split = frames.index(b"") + 1
            address, body = frames[:split], frames[split:]
            payload = payload_of(body)
            worker.request()
            worker.sock.send_multipart(address + [b"ppp:" + b"".join(upper(f) for f in payload)])
        else:
            worker.say("malformed frames=%d" % len(frames))

    worker.run(handle)
    return worker.finish()


if __name__ == "__main__":
    sys.exit(main())
