#!/usr/bin/env python3
"""A minimal 7/MDP (MDP/0.1) broker with 8/MMI `mmi.service`, written from the RFC
texts with pyzmq only.

It shares no code with bosun: it is the independent peer of bosun's interop tests
(tests/interop_pyzmq.rs).

usage: mdp_broker.py ENDPOINT COUNT [--heartbeat MS] [--liveness N]
                     [--max-seconds S] [--min-seconds S] [--bind-after MS]

One ROUTER socket bound at ENDPOINT (`tcp://127.0.0.1:*` picks a free port) for clients
and workers. Per service, one FIFO queue of requests and a least-recently-used list of
idle workers; a worker holds one request at a time. It sends HEARTBEAT to every worker
every --heartbeat ms (default 2500) and forgets a worker silent for --liveness (default 3)
intervals. READY from a known worker, READY for an `mmi.` service and any command but
READY and DISCONNECT from an unknown worker draw DISCONNECT. Extra frames after the
service name of READY are ignored, as by the reference broker.

It exits on its own once it has forwarded COUNT replies to clients (COUNT 0: no limit)
and has run --min-seconds (default 0), or after --max-seconds (default 15) in any case;
SIGTERM ends it at once (it still prints its done line). --bind-after waits that long
before binding (a broker that comes back late, after workers queued several heartbeats).

Output (stdout), one line each, machine-checkable:
    broker bound=ENDPOINT
    broker worker-ready worker=HEX service=NAME extra_frames=K
    broker reply n=N worker=HEX client=HEX
    broker sent-disconnect worker=HEX reason=WORDS
    broker expired worker=HEX
    broker malformed sender=HEX frames=...
    broker done requests=Q replies=R workers_ready=W heartbeats_in=H expired=E disconnects_sent=D malformed=M
"""

import argparse
import collections
import signal
import sys
import time

import zmq

CLIENT = b"MDPC01"
WORKER = b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"


def say(line):
    print(line, flush=True)


def text(frame):
    return frame.decode("utf-8", "backslashreplace")


class Broker:
    def __init__(self, sock, heartbeat, liveness):
        self.sock = sock
        self.heartbeat = heartbeat
        self.expiry = heartbeat * liveness
        self.queues = collections.defaultdict(collections.deque)  # service -> (client, body)
        self.idle = collections.defaultdict(collections.deque)  # service -> worker ids, LRU first
        self.workers = {}  # worker id -> {"service", "expires", "busy"}
        self.stats = dict(
            requests=0, replies=0, workers_ready=0, heartbeats_in=0, expired=0, disconnects_sent=0, malformed=0
        )

    def send(self, frames):
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as e:
            say("broker send-failed to=%s error=%s" % (frames[0].hex(), e))

    def disconnect(self, worker, reason):
        self.send([worker, b"", WORKER, DISCONNECT])
        self.stats["disconnects_sent"] += 1
        say("broker sent-disconnect worker=%s reason=%s" % (worker.hex(), reason.replace(" ", "-")))
        self.forget(worker)

    def forget(self, worker):
        w = self.workers.pop(worker, None)
        if w is not None and worker in self.idle[w["service"]]:
            self.idle[w["service"]].remove(worker)

    def malformed(self, sender, frames):
        self.stats["malformed"] += 1
        say("broker malformed sender=%s frames=%r" % (sender.hex(), frames))

    def handle(self, frames):
        if len(frames) < 3 or frames[1] != b"":
            return self.malformed(frames[0] if frames else b"", frames)
        sender, header = frames[0], frames[2]
        if header == CLIENT and len(frames) >= 4:
            self.client(sender, frames[3], frames[4:])
        elif header == WORKER and len(frames) >= 4:
            self.worker(sender, frames[3], frames[4:])
        else:
            self.malformed(sender, frames)

    def client(self, client, service, body):
        if service.startswith(b"mmi."):
            if service == b"mmi.service":
                asked = b"".join(body)
                known = any(w["service"] == asked for w in self.workers.values())
                code = b"200" if known else b"404"
            else:
                code = b"501"
            self.send([client, b"", CLIENT, service, code])
            return
        self.stats["requests"] += 1
        self.queues[service].append((client, body))
        self.dispatch(service)

    def worker(self, worker, command, args):
        known = worker in self.workers
        now = time.monotonic()
        if command == READY and len(args) >= 1:
            service = args[0]
            if known:
                return self.disconnect(worker, "second READY")
            if service.startswith(b"mmi."):
                return self.disconnect(worker, "READY for an mmi service")
            self.workers[worker] = {"service": service, "expires": now + self.expiry, "busy": None}
            self.idle[service].append(worker)
            self.stats["workers_ready"] += 1
            say("broker worker-ready worker=%s service=%s extra_frames=%d" % (worker.hex(), text(service), len(args) - 1))
            self.dispatch(service)
        elif command == REPLY and len(args) >= 2 and args[1] == b"":
            if not known:
                return self.disconnect(worker, "REPLY from an unknown worker")
            w = self.workers[worker]
            w["expires"] = now + self.expiry
            client, body = args[0], args[2:]
            self.send([client, b"", CLIENT, w["service"]] + body)
            self.stats["replies"] += 1
            say("broker reply n=%d worker=%s client=%s" % (self.stats["replies"], worker.hex(), client.hex()))
            w["busy"] = None
            self.idle[w["service"]].append(worker)
            self.dispatch(w["service"])
        elif command == HEARTBEAT and not args:
            if not known:
                return self.disconnect(worker, "HEARTBEAT from an unknown worker")
            self.workers[worker]["expires"] = now + self.expiry
            self.stats["heartbeats_in"] += 1
        elif command == DISCONNECT and not args:
            self.forget(worker)
        else:
            self.malformed(worker, [worker, b"", WORKER, command] + args)

    def dispatch(self, service):
        queue, idle = self.queues[service], self.idle[service]
        while queue and idle:
            worker = idle.popleft()
            client, body = queue.popleft()
            self.workers[worker]["busy"] = client
            self.send([worker, b"", WORKER, REQUEST, client, b""] + body)

    def beat(self):
        for worker in list(self.workers):
            self.send([worker, b"", WORKER, HEARTBEAT])

    def purge(self, now):
        for worker, w in list(self.workers.items()):
            if w["expires"] <= now:
                self.stats["expired"] += 1
                say("broker expired worker=%s" % worker.hex())
                self.forget(worker)


class Stop(Exception):
    """Raised by the SIGTERM handler, so that even a blocked poll ends at once."""


def on_sigterm(_signum, _frame):
    raise Stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("count", type=int)
    p.add_argument("--heartbeat", type=int, default=2500, help="milliseconds")
    p.add_argument("--liveness", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=15.0)
    p.add_argument("--min-seconds", type=float, default=0.0)
    p.add_argument("--bind-after", type=int, default=0, help="milliseconds, at most 10000")
    args = p.parse_args()
    if args.heartbeat <= 0 or args.liveness <= 0 or args.count < 0:
        p.error("--heartbeat and --liveness must be positive, COUNT not negative")
    if not 0 <= args.bind_after <= 10000:
        p.error("--bind-after must be between 0 and 10000")
    signal.signal(signal.SIGTERM, on_sigterm)
    ctx = zmq.Context()
    if args.bind_after:
        # A bounded wait: poll a socket that nothing will ever make readable.
        idle = ctx.socket(zmq.PULL)
        idle.poll(args.bind_after, zmq.POLLIN)
        idle.close(0)
    start = time.monotonic()
    hard_end = start + args.max_seconds
    soft_end = start + args.min_seconds
    heartbeat = args.heartbeat / 1000.0
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.bind(args.endpoint)
    say("broker bound=%s" % text(sock.getsockopt(zmq.LAST_ENDPOINT)))
    b = Broker(sock, heartbeat, args.liveness)
    next_beat = start + heartbeat
    try:
        while True:
            now = time.monotonic()
            if now >= hard_end:
                say("broker time-limit")
                break
            done = args.count and b.stats["replies"] >= args.count
            if done and now >= soft_end:
                break
            wake = min(next_beat, hard_end, soft_end if done else hard_end)
            if sock.poll(max(1, int((wake - now) * 1000) + 1), zmq.POLLIN):
                for _ in range(1000):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    b.handle(frames)
            now = time.monotonic()
            if now >= next_beat:
                b.beat()
                next_beat = now + heartbeat
            b.purge(now)
    except Stop:
        say("broker stopped by SIGTERM")
    finally:
        sock.close(1000)
        ctx.term()
    say(
        "broker done requests=%(requests)d replies=%(replies)d workers_ready=%(workers_ready)d "
        "heartbeats_in=%(heartbeats_in)d expired=%(expired)d disconnects_sent=%(disconnects_sent)d "
        "malformed=%(malformed)d" % b.stats
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
