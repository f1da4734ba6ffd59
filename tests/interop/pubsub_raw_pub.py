#!/usr/bin/env python3
"""A plain ZeroMQ PUB socket that is NOT bosun, with pyzmq only: the foreign publisher
of tests/interop_pubsub.rs. Its messages are [topic][payload], with no bosun metadata
frame, as any ZeroMQ publisher sends them.

usage: pubsub_raw_pub.py ENDPOINT TOPIC [--every-ms MS] [--max-seconds S]

Binds a PUB socket at ENDPOINT (`tcp://127.0.0.1:*` picks a free port), prints
`pub bound=ENDPOINT`, then sends `[TOPIC][raw-N]` (N from 1) every --every-ms (default
20) until SIGTERM or --max-seconds (default 20), and prints `pub done sent=N`.
"""

import argparse
import signal
import sys
import time

import zmq


def say(line):
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("topic")
    ap.add_argument("--every-ms", type=float, default=20.0)
    ap.add_argument("--max-seconds", type=float, default=20.0)
    args = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(args.endpoint)
    say("pub bound=%s" % sock.getsockopt(zmq.LAST_ENDPOINT).decode())
    topic = args.topic.encode("utf-8")
    sent = 0
    deadline = time.monotonic() + args.max_seconds
    while not stop and time.monotonic() < deadline:
        sent += 1
        sock.send_multipart([topic, b"raw-%d" % sent])
        # A bounded pause between messages; nothing waits on it.
        time.sleep(args.every_ms / 1000.0)
    sock.close(0)
    ctx.term()
    say("pub done sent=%d" % sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
