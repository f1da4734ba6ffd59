"""What the pyzmq peers in this folder share. Written from the ZeroMQ RFCs and from the
metadata-frame table at the top of src/proto/envelope.rs, with pyzmq only: like the
peers, it shares no code with bosun.

The peers are run as `python3 path/to/script.py`, so this folder is on sys.path and
they `import peer`.

  * say, payload_of, upper: one stdout line; a body without bosun's metadata frame;
    a frame in upper case.
  * parse_args: the positional arguments, the options, then --max-seconds.
  * socket: a pyzmq socket with LINGER 0 and SNDTIMEO 2000.
  * Peer: one run of a service: stdout lines under its name, every message received
    recorded to RECORD (one JSON line {"frames": [hex, ...]} per message), a stop on
    SIGTERM or after --max-seconds, and `NAME request n=N` / `NAME done handled=N`.
  * Worker: a Peer on a DEALER socket that heartbeats and starts over on a new socket
    when its peer falls silent.
"""

import argparse
import json
import signal
import time

import zmq

# First bytes of bosun's metadata frame, which a foreign peer ignores.
META_MAGIC = b"\xffBSN"


def say(line):
    print(line, flush=True)


def payload_of(body):
    """The body without bosun's trailing metadata frame, if it has one."""
    if body and body[-1].startswith(META_MAGIC):
        return body[:-1]
    return body


def upper(frame):
    try:
        return frame.decode("utf-8").upper().encode("utf-8")
    except UnicodeDecodeError:
        return frame.upper()


def parse_args(positional, options=(), max_seconds=60):
    """The command line: the `positional` arguments, then the `options` (triples of flag,
    type and default), then --max-seconds (default `max_seconds`) unless that is None."""
    ap = argparse.ArgumentParser()
    for name in positional:
        ap.add_argument(name)
    for flag, kind, default in options:
        ap.add_argument(flag, type=kind, default=default)
    if max_seconds is not None:
        ap.add_argument("--max-seconds", type=float, default=max_seconds)
    return ap.parse_args()


def socket(ctx, kind):
    """A socket that drops what it could not send when closed, and fails a send that
    cannot complete within 2 s instead of blocking."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    return sock


class Peer:
    """One run of a service on one socket (`sock`, made by `open`). Its stdout lines start
    with `name`; it records every message it receives to `args.record`; it runs until
    SIGTERM or `args.max_seconds` (see `running`)."""

    def __init__(self, name, args):
        self.name = name
        self.stop = []
        signal.signal(signal.SIGTERM, lambda *_: self.stop.append(1))
        self.record_file = open(args.record, "w")
        self.ctx = zmq.Context()
        self.sock = None
        self.handled = 0
        self.end = time.monotonic() + args.max_seconds

    def say(self, what):
        say("%s %s" % (self.name, what))

    def open(self, kind):
        """A new socket of `kind` (see `socket`) in place of the old one, if any."""
        if self.sock is not None:
            self.sock.close(0)
        self.sock = socket(self.ctx, kind)
        return self.sock

    def running(self):
        return not self.stop and time.monotonic() < self.end

    def record(self, frames):
        self.record_file.write(json.dumps({"frames": [f.hex() for f in frames]}) + "\n")
        self.record_file.flush()

    def request(self, more=""):
        """Counts one request handled and says `NAME request n=N` (then `more`)."""
        self.handled += 1
        self.say("request n=%d%s" % (self.handled, more))

    def serve(self, handle):
        """Records every message received and passes it to `handle`, while `running`."""
        while self.running():
            if not self.sock.poll(100, zmq.POLLIN):
                continue
            frames = self.sock.recv_multipart()
            self.record(frames)
            handle(frames)

    def finish(self):
        """Says `NAME done handled=N`, closes the socket; the exit status (0)."""
        self.say("done handled=%d" % self.handled)
        self.sock.close(0)
        self.ctx.term()
        return 0


class Worker(Peer):
    """A Peer on one DEALER socket connected to `args.endpoint`: it sends `ready` first on
    every new socket (saying `NAME ready n=K`), `heartbeat` every `args.heartbeat` ms; any
    message it receives is a sign of life, and after `args.liveness` silent intervals it
    says `NAME silent` and starts over on a new socket."""

    def __init__(self, name, args, ready, heartbeat, silent):
        super().__init__(name, args)
        self.endpoint = args.endpoint
        self.interval = args.heartbeat / 1000.0
        self.liveness = args.liveness
        self.ready, self.heartbeat, self.silent = ready, heartbeat, silent
        self.readies = 0

    def open_socket(self):
        sock = self.open(zmq.DEALER)
        sock.connect(self.endpoint)
        sock.send_multipart(self.ready)
        self.readies += 1
        self.say("ready n=%d" % self.readies)

    def run(self, handle):
        """Opens the first socket, then records every message received and passes it to
        `handle`, heartbeating, while `running`."""
        self.open_socket()
        heard = time.monotonic()
        next_beat = heard + self.interval
        while self.running():
            wait = max(0.0, next_beat - time.monotonic())
            if self.sock.poll(int(wait * 1000) + 1, zmq.POLLIN):
                frames = self.sock.recv_multipart()
                self.record(frames)
                heard = time.monotonic()
                handle(frames)
            now = time.monotonic()
            if now - heard > self.interval * self.liveness:
                self.say(self.silent)
                self.open_socket()
                heard = now
            if now >= next_beat:
                self.sock.send_multipart(self.heartbeat)
                next_beat = now + self.interval
