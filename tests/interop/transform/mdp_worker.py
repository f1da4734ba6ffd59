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

import sys
import time

import zmq

from peer import Worker, parse_args, payload_of, upper

WORKER = b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"


def main():
    args = parse_args(
        ["endpoint", "service", "record"],
        [("--heartbeat", int, 2500), ("--liveness", int, 3), ("--late-ms", int, 0)],
    )
    worker = Worker(
        "worker",
        args,
        ready=[b"", WORKER, READY, args.service.encode()],
        heartbeat=[b"", WORKER, HEARTBEAT],
        silent="broker-silent",
    )
    seen = set()

    def handle(frames):
        if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
            worker.say("malformed")
            return
        command = frames[2]
        if command == REQUEST and len(frames) >= 5 and frames[4] == b"":
            client = frames[3]
            payload = payload_of(frames[5:])
            late = args.late_ms > 0 and tuple(payload) not in seen
            seen.add(tuple(payload))
            worker.request(" late=%d" % int(late))
            if late:
                time.sleep(args.late_ms / 1000.0)
            reply = [b"mdp:"] + [upper(f) for f in payload]
            worker.sock.send_multipart([b"", WORKER, REPLY, client, b""] + reply)
        elif command == HEARTBEAT:
            pass
        elif command == DISCONNECT:
            worker.say("disconnect-received")
            worker.open_socket()
        else:
            worker.say("malformed command=%s" % command.hex())

    worker.run(handle)
    try:
        worker.sock.send_multipart([b"", WORKER, DISCONNECT])
    except zmq.ZMQError:
        pass
    return worker.finish()


if __name__ == "__main__":
    sys.exit(main())
