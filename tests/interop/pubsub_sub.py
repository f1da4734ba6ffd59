#!/usr/bin/env python3
"""A plain ZeroMQ SUB socket reading a bosun publisher, written from the wire section of
bosun's pub/sub contract with pyzmq only. It shares no code with bosun: it is the
independent peer of tests/interop_pubsub.rs.

usage: pubsub_sub.py PREFIX COUNT RECORD --connect EP [--connect EP ...]
                     [--publishers K] [--max-seconds S]

What it reads (all integers big-endian):
  * data:      [topic][payload frame 1]...[payload frame N][metadata]
  * heartbeat: [FF 42 53 4E 2E 68 62][metadata]
  * metadata:  magic FF 42 53 50, version 1, kind (0 data, 1 heartbeat), u16 (heartbeat:
               the publisher's heartbeat interval in ms, 0 if not said; data: 0), 16-byte publisher id, u64 sequence (data: this message's; heartbeat:
               the last published), u64 published-at ms, u64 oldest retained (heartbeat
               only), u16 length L, L bytes of replay endpoint (heartbeat only).

It subscribes to PREFIX, as any ZeroMQ subscriber would, and also to the heartbeat topic,
so that it can tell when its subscriptions have reached every publisher: once it has a
heartbeat from --publishers K distinct publishers (default 1) it prints `sub ready`.
Nothing is published before then in the test, so it misses nothing (a plain SUB socket
has no other way to know).

What it does with each data message (the "something real"): it takes the payload (every
frame between the topic and the metadata frame, joined), turns it to upper case
(Unicode), and records one JSON line to RECORD:
    {"topic": HEX, "payload": [HEX, ...], "publisher": HEX, "seq": N,
     "published_at_ms": T, "upper": HEX}
(every string is hex, so that a reader needs no JSON unescaping; "upper" is the UTF-8
of the upper-cased payload).
A message whose topic does not start with PREFIX (the SUB socket should have filtered
it), or whose metadata does not parse, is counted, not recorded.

Output (stdout), one line each, machine-checkable:
    sub heartbeat publisher=HEX last=N oldest=N replay=ENDPOINT interval_ms=N
    sub ready publishers=K
    sub message topic=TEXT seq=N frames=K upper=TEXT
    sub done received=N heartbeats=H unfiltered=U malformed=M
Exits 0 after COUNT data messages with nothing malformed or unfiltered, 1 otherwise (also
at --max-seconds, default 20). Every wait is bounded by --max-seconds.
"""

import argparse
import json
import signal
import struct
import sys
import time

import zmq

HEARTBEAT_TOPIC = b"\xffBSN.hb"
MAGIC = b"\xffBSP"
VERSION = 1
KIND_DATA = 0
KIND_HEARTBEAT = 1
# magic 4, version 1, kind 1, reserved 2, publisher 16, seq 8, published-at 8, oldest 8,
# endpoint length 2.
FIXED = struct.Struct(">4sBBH16sQQQH")


def say(line):
    print(line, flush=True)


def parse_meta(frame):
    """(kind, publisher bytes, seq, published_at_ms, oldest, endpoint, interval_ms) or None."""
    if len(frame) < FIXED.size:
        return None
    magic, version, kind, interval, publisher, seq, at, oldest, length = FIXED.unpack_from(frame)
    if magic != MAGIC or version != VERSION:
        return None
    if len(frame) != FIXED.size + length:
        return None
    try:
        endpoint = frame[FIXED.size :].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if kind == KIND_DATA and (oldest != 0 or length != 0 or interval != 0):
        return None
    if kind not in (KIND_DATA, KIND_HEARTBEAT):
        return None
    return kind, publisher, seq, at, oldest, endpoint, interval


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix")
    ap.add_argument("count", type=int)
    ap.add_argument("record")
    ap.add_argument("--connect", action="append", required=True)
    ap.add_argument("--publishers", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=20.0)
    args = ap.parse_args()
    prefix = args.prefix.encode("utf-8")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)  # no drops on our side: the test counts every message
    sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
    for ep in args.connect:
        sock.connect(ep)

    stats = dict(received=0, heartbeats=0, unfiltered=0, malformed=0)
    heard = set()
    ready = False
    deadline = time.monotonic() + args.max_seconds
    with open(args.record, "w") as record:
        while stats["received"] < args.count and not stop:
            left = deadline - time.monotonic()
            if left <= 0:
                say("sub timeout")
                break
            if not sock.poll(int(min(left, 0.1) * 1000) + 1, zmq.POLLIN):
                continue
            frames = sock.recv_multipart()
            if len(frames) < 2:
                stats["malformed"] += 1
                say("sub malformed frames=%d" % len(frames))
                continue
            topic, meta = frames[0], parse_meta(frames[-1])
            if meta is None:
                stats["malformed"] += 1
                say("sub malformed metadata=%s" % frames[-1].hex())
                continue
            kind, publisher, seq, at, oldest, endpoint, interval = meta
            if topic == HEARTBEAT_TOPIC:
                if kind != KIND_HEARTBEAT or len(frames) != 2:
                    stats["malformed"] += 1
                    say("sub malformed heartbeat kind=%d frames=%d" % (kind, len(frames)))
                    continue
                stats["heartbeats"] += 1
                if publisher not in heard:
                    heard.add(publisher)
                    say(
                        "sub heartbeat publisher=%s last=%d oldest=%d replay=%s interval_ms=%d"
                        % (publisher.hex(), seq, oldest, endpoint, interval)
                    )
                if not ready and len(heard) >= args.publishers:
                    ready = True
                    say("sub ready publishers=%d" % len(heard))
                continue
            if kind != KIND_DATA:
                stats["malformed"] += 1
                say("sub malformed kind=%d on topic %s" % (kind, topic.hex()))
                continue
            if not topic.startswith(prefix):
                stats["unfiltered"] += 1
                say("sub unfiltered topic=%s" % topic.hex())
                continue
            payload = frames[1:-1]
            joined = b"".join(payload)
            upper = joined.decode("utf-8", "backslashreplace").upper()
            stats["received"] += 1
            record.write(
                json.dumps(
                    {
                        "topic": topic.hex(),
                        "payload": [f.hex() for f in payload],
                        "publisher": publisher.hex(),
                        "seq": seq,
                        "published_at_ms": at,
                        "upper": upper.encode("utf-8").hex(),
                    },
                )
                + "\n"
            )
            record.flush()
            say(
                "sub message topic=%s seq=%d frames=%d upper=%s"
                % (topic.decode("utf-8", "backslashreplace"), seq, len(payload), upper)
            )
    sock.close(0)
    ctx.term()
    say(
        "sub done received=%(received)d heartbeats=%(heartbeats)d "
        "unfiltered=%(unfiltered)d malformed=%(malformed)d" % stats
    )
    ok = stats["received"] == args.count and stats["unfiltered"] == 0 and stats["malformed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
