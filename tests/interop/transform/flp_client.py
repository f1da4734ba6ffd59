#!/usr/bin/env python3
"""A 10/FLP (Freelance) client that checks a server, written from the RFC text with
pyzmq only. It knows nothing of bosun: it sends no metadata frame and expects none.

usage: flp_client.py ENDPOINT [--quiet-ms MS] [--timeout-ms MS]

One ROUTER socket (no identity of its own) connected to ENDPOINT, which is also the
server's identity. In order:
  1. waits --quiet-ms (default 300) and fails if the server sends anything before the
     client has spoken (a server can only reply to clients that sent a command);
  2. sends ["PING"], expects exactly ["PONG"];
  3. sends [control]["part1"]["part2"], expects exactly [control]["part1"]["part2"]
     back from an echo server: frames kept apart, no frame added.
Each wait is bounded by --timeout-ms (default 5000).

stdout: `flp-client ok` and exit 0, or `flp-client FAIL: why` and exit 1.
"""

import errno
import sys
import time

import zmq

from peer import parse_args, socket

CONTROL = b"\x00ctl\x07"


class Fail(Exception):
    pass


def main():
    args = parse_args(
        ["endpoint"], [("--quiet-ms", int, 300), ("--timeout-ms", int, 5000)], max_seconds=None
    )
    server = args.endpoint.encode()

    ctx = zmq.Context()
    sock = socket(ctx, zmq.ROUTER)
    # Fail a send to a server not connected yet instead of dropping it silently.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.connect(args.endpoint)

    def send(frames):
        """Sends to the server, retrying while the connection is not up yet."""
        end = time.monotonic() + args.timeout_ms / 1000.0
        while True:
            try:
                sock.send_multipart([server] + frames)
                return
            except zmq.ZMQError as e:
                if e.errno != errno.EHOSTUNREACH or time.monotonic() >= end:
                    raise Fail("send %r: %s" % (frames, e))
                sock.poll(10, zmq.POLLIN)

    def expect(want, what):
        if not sock.poll(args.timeout_ms, zmq.POLLIN):
            raise Fail("no answer to %s within %d ms" % (what, args.timeout_ms))
        got = sock.recv_multipart()
        if got != [server] + want:
            raise Fail("answer to %s: got %r, want %r" % (what, got, [server] + want))

    try:
        if sock.poll(args.quiet_ms, zmq.POLLIN):
            raise Fail("the server spoke first: %r" % sock.recv_multipart())
        send([b"PING"])
        expect([b"PONG"], "PING")
        request = [CONTROL, b"part1", b"part2"]
        send(request)
        expect(request, "[control][part1][part2]")
    except Fail as e:
        print("flp-client FAIL: %s" % e, flush=True)
        return 1
    finally:
        sock.close(0)
        ctx.term()
    print("flp-client ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
