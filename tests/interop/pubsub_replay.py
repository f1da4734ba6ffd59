#!/usr/bin/env python3
"""A replay client for a bosun publisher, written from the replay-channel section of
bosun's pub/sub contract with pyzmq only (it shares no code with bosun): the
independent peer of tests/interop_pubsub.rs.

usage: pubsub_replay.py ENDPOINT PUBLISHER_HEX FROM MAX [--max-seconds S]

One DEALER socket connected to the publisher's replay endpoint (its ROUTER). Every
command starts with the protocol frame `BSP-R1`; integers are big-endian:
  send     [BSP-R1][REPLAY][publisher id, 16 bytes][from u64][max u32]
  receive  [BSP-R1][DATA][topic][payload...][metadata]   one retained message each
           [BSP-R1][END][from u64][last u64]              the batch is over
           [BSP-R1][TRIMMED][from u64][oldest u64]        `from` is no longer retained
           [BSP-R1][UNKNOWN][publisher id 16]             not that publisher
The metadata frame is the one on the PUB socket (magic FF 42 53 50, version 1, kind 0,
reserved, publisher id, sequence, published-at, oldest 0, length 0).

It asks REPLAY from FROM (at most MAX) and reads until END, TRIMMED or UNKNOWN; on
TRIMMED it asks again from the oldest retained sequence, as the contract says a
subscriber does; after END it asks again from last-delivered + 1 while END says the
publisher is further on (at most 1000 rounds). Before that it sends one REPLAY for a
publisher id of all 0xEE bytes, which must draw UNKNOWN.

Output (stdout), one line each, machine-checkable:
    replay unknown publisher=HEX
    replay trimmed from=N oldest=N
    replay data seq=N topic=HEX payload=HEX,HEX,...
    replay end from=N last=N
    replay done data=N ends=E trimmed=T unknown=U malformed=M gaps=G
Exits 0 when every DATA parsed, carried the asked publisher id and came in order with no
gap, and the wrong id drew UNKNOWN; 1 otherwise (also at --max-seconds, default 15).
"""

import argparse
import struct
import sys
import time

import zmq

PROTOCOL = b"BSP-R1"
MAGIC = b"\xffBSP"
FIXED = struct.Struct(">4sBBH16sQQQH")


def say(line):
    print(line, flush=True)


def u64(frame):
    return struct.unpack(">Q", frame)[0] if len(frame) == 8 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("publisher")
    ap.add_argument("start", type=int)
    ap.add_argument("max", type=int)
    ap.add_argument("--max-seconds", type=float, default=15.0)
    args = ap.parse_args()
    publisher = bytes.fromhex(args.publisher)
    if len(publisher) != 16:
        ap.error("PUBLISHER_HEX must be 16 bytes")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    sock.connect(args.endpoint)
    deadline = time.monotonic() + args.max_seconds
    stats = dict(data=0, ends=0, trimmed=0, unknown=0, malformed=0, gaps=0)

    def replay(pid, start):
        sock.send_multipart(
            [PROTOCOL, b"REPLAY", pid, struct.pack(">Q", start), struct.pack(">I", args.max)]
        )

    def recv():
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
            return None
        return sock.recv_multipart()

    ok = True
    # 1. A publisher id that is not this publisher's.
    wrong = b"\xee" * 16
    replay(wrong, 1)
    frames = recv()
    if frames is not None and frames[:2] == [PROTOCOL, b"UNKNOWN"] and frames[2:] == [wrong]:
        stats["unknown"] += 1
        say("replay unknown publisher=%s" % wrong.hex())
    else:
        say("replay no-unknown got=%r" % (frames,))
        ok = False

    # 2. The history from START, in batches, to the end.
    expected = args.start
    replay(publisher, expected)
    rounds = 0
    while ok:
        frames = recv()
        if frames is None:
            say("replay timeout expected=%d" % expected)
            ok = False
            break
        if len(frames) < 2 or frames[0] != PROTOCOL:
            stats["malformed"] += 1
            say("replay malformed frames=%r" % (frames,))
            ok = False
            break
        command, rest = frames[1], frames[2:]
        if command == b"DATA":
            meta = rest[-1] if len(rest) >= 3 else b""
            if len(meta) < FIXED.size:
                stats["malformed"] += 1
                say("replay malformed data=%r" % (rest,))
                ok = False
                break
            magic, version, kind, _, pid, seq, _, oldest, length = FIXED.unpack_from(meta)
            if magic != MAGIC or version != 1 or kind != 0 or pid != publisher or length != 0:
                stats["malformed"] += 1
                say("replay malformed metadata=%s" % meta.hex())
                ok = False
                break
            if seq != expected:
                stats["gaps"] += 1
                say("replay out-of-order seq=%d expected=%d" % (seq, expected))
                ok = False
                break
            expected += 1
            stats["data"] += 1
            say(
                "replay data seq=%d topic=%s payload=%s"
                % (seq, rest[0].hex(), ",".join(f.hex() for f in rest[1:-1]))
            )
        elif command == b"END" and len(rest) == 2 and None not in (u64(rest[0]), u64(rest[1])):
            stats["ends"] += 1
            start, last = u64(rest[0]), u64(rest[1])
            say("replay end from=%d last=%d" % (start, last))
            rounds += 1
            if last < expected or rounds >= 1000:
                break
            replay(publisher, expected)
        elif command == b"TRIMMED" and len(rest) == 2 and None not in (u64(rest[0]), u64(rest[1])):
            stats["trimmed"] += 1
            start, oldest = u64(rest[0]), u64(rest[1])
            say("replay trimmed from=%d oldest=%d" % (start, oldest))
            if oldest == 0 or oldest <= expected or rounds >= 1000:
                # Nothing retained, or nothing older to skip: the history is over.
                if oldest == 0:
                    break
                ok = False
                break
            rounds += 1
            expected = oldest
            replay(publisher, expected)
        else:
            stats["malformed"] += 1
            say("replay malformed frames=%r" % (frames,))
            ok = False
            break
    sock.close(0)
    ctx.term()
    say(
        "replay done data=%(data)d ends=%(ends)d trimmed=%(trimmed)d unknown=%(unknown)d "
        "malformed=%(malformed)d gaps=%(gaps)d" % stats
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
