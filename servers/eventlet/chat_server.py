#!/usr/bin/python3
"""The seed's chat server, grown into chat protocol v1 (docs/protocol.md).

The shape is the seed's: a listener, one green thread per connection running a read loop,
a set of participants (here grouped in rooms), and relay of each line to the others.
What the protocol adds: framing with a line limit, commands, counters, and a bounded
output queue per receiver, written by a green thread of its own that exists only while
output is pending, so that a receiver that stops reading never stalls the sender.

Run with Debian's interpreter, which has python3-eventlet:
    /usr/bin/python3 servers/eventlet/chat_server.py --port 0
"""

import argparse
import collections
import errno
import itertools
import os
import re
import signal
import socket
import sys

# Host names are resolved once, at start: eventlet's green DNS (dnspython) is not needed,
# and loading it would add some 25 MB to the resident memory every measurement starts from.
os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")

try:
    import eventlet
    from eventlet.hubs import trampoline
except ImportError:
    sys.exit("chat_server.py: the eventlet module is missing; install python3-eventlet "
             "(apt-get install python3-eventlet) and run with /usr/bin/python3")

VARIANT = "eventlet"
LOBBY = b"lobby"
ROOM_NAME = re.compile(rb"[A-Za-z0-9._-]{1,64}")
READ_SIZE = 65536      # one recv; a connection never holds more than max-line + this
IOV_MAX = 1024         # buffers per sendmsg (Linux's limit)
ACCEPT_BACKOFF_FIRST = 0.010
ACCEPT_BACKOFF_MAX = 1.0
SHUTDOWN_GRACE = 1.5   # seconds to let connections close; the contract allows 2


# --- counters -----------------------------------------------------------------------

class Counters:
    """The /stats counters, in docs/protocol.md's words. One process, one thread: plain ints."""

    def __init__(self):
        self.clients = 0
        self.lines_in = 0
        self.lines_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.slow_disconnects = 0
        self.rejected = 0

    def stats_line(self):
        return (f"/stats variant={VARIANT} clients={self.clients} rooms={len(rooms)} "
                f"lines_in={self.lines_in} lines_out={self.lines_out} "
                f"bytes_in={self.bytes_in} bytes_out={self.bytes_out} "
                f"slow_disconnects={self.slow_disconnects} rejected={self.rejected}")


options = None
counters = Counters()
rooms = {}          # room name -> set of Sessions in it; an empty room is forgotten
sessions = set()    # every admitted connection, for --max-clients and shutdown


# --- room ---------------------------------------------------------------------------

def enter_room(session, name):
    rooms.setdefault(name, set()).add(session)
    session.room = name


def leave_room(session):
    members = rooms.get(session.room)
    if members is not None:
        members.discard(session)
        if not members:
            del rooms[session.room]
    session.room = None


def relay(sender, line):
    """The seed's loop: every other participant in the sender's room gets the same bytes
    object (immutable, so it is stored once whatever the number of receivers)."""
    counters.lines_in += 1
    for participant in rooms[sender.room]:
        if participant is not sender:  # Don't echo
            participant.deliver(line, is_chat=True)


# --- session ------------------------------------------------------------------------

class WriteTimeout(Exception):
    pass


class Session:
    """One connection. Its read loop runs in the green thread that accepted it; its output
    queue is written by a writer green thread that runs only while the queue is not empty."""

    __slots__ = ("sock", "room", "outbox", "pending", "head_written", "writer", "closed")

    def __init__(self, sock):
        self.sock = sock
        self.room = None
        self.outbox = collections.deque()  # (line, is_chat), shared line objects
        self.pending = 0                   # bytes queued and not yet written
        self.head_written = 0              # bytes of outbox[0] already written
        self.writer = None                 # the writer green thread while one runs
        self.closed = False

    def deliver(self, line, is_chat=False):
        """Queues a line for this receiver without blocking the caller."""
        if self.closed:
            return
        if self.pending + len(line) > options.max_pending:
            self.disconnect_slow()
            return
        self.outbox.append((line, is_chat))
        self.pending += len(line)
        if self.writer is None:
            self.writer = eventlet.spawn(self.write_pending)

    def write_pending(self):
        try:
            while self.outbox and not self.closed:
                buffers = [line for line, _ in itertools.islice(self.outbox, IOV_MAX)]
                if self.head_written:
                    buffers[0] = memoryview(buffers[0])[self.head_written:]
                written = send_some(self.sock, buffers, options.write_timeout_ms / 1000)
                counters.bytes_out += written
                self.pending -= written
                self.consume(written)
        except WriteTimeout:
            self.disconnect_slow()
        except OSError:  # reset or gone: costs only this connection
            self.close_now()
        finally:
            self.writer = None

    def consume(self, written):
        """Drops the lines written in full; a chat line counts in lines_out when its last
        byte is written."""
        written += self.head_written
        while self.outbox and written >= len(self.outbox[0][0]):
            line, is_chat = self.outbox.popleft()
            written -= len(line)
            if is_chat:
                counters.lines_out += 1
        self.head_written = written

    def disconnect_slow(self):
        """A receiver over --max-pending or --write-timeout-ms."""
        if not self.closed:
            counters.slow_disconnects += 1
            self.close_now()

    def close_now(self):
        """Drops what is queued and shuts the socket down; the read loop then sees the end
        of input and the connection's green thread closes the descriptor."""
        if self.closed:
            return
        self.closed = True
        self.outbox.clear()
        self.pending = 0
        self.head_written = 0
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def send_some(sock, buffers, timeout):
    """Writes what the socket takes now in one gathered sendmsg, first waiting up to
    timeout for it to take anything. (Eventlet's green socket has no green sendmsg, and
    its send would need the lines joined, a copy per receiver.)"""
    while True:
        try:
            return sock.fd.sendmsg(buffers)
        except BlockingIOError:
            trampoline(sock.fd, write=True, timeout=timeout, timeout_exc=WriteTimeout())


class LineTooLong(Exception):
    pass


class LineReader:
    """The seed's reader.readline(), bounded: returns the next line as the server sends
    it (content + LF, a CR before the LF dropped), or None at the end of input. Bytes
    after the last LF at the end of input are not a line. Holds at most max-line + one
    read of bytes."""

    __slots__ = ("sock", "buffer", "start")

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.start = 0  # where the unread part of buffer begins

    def readline(self):
        max_line = options.max_line
        while True:
            end = self.buffer.find(b"\n", self.start)
            if end >= 0:
                if end > self.start and self.buffer[end - 1] == 0x0D:  # CR before LF
                    line = self.buffer[self.start:end - 1] + b"\n"
                else:
                    line = self.buffer[self.start:end + 1]
                self.start = end + 1
                if len(line) - 1 > max_line:
                    raise LineTooLong()
                return line
            # No LF yet: decide as soon as more than max-line content bytes are here.
            # A CR at the end may still be dropped, so it does not count yet.
            unread = len(self.buffer) - self.start
            if unread and self.buffer[-1] == 0x0D:
                unread -= 1
            if unread > max_line:
                raise LineTooLong()
            # A green recv that finds data waiting returns without yielding, so a client
            # that floods would run alone and its receivers' queues would only grow. Let
            # the writers and the other readers have their turn first.
            eventlet.sleep(0)
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                return None
            counters.bytes_in += len(chunk)
            self.buffer = self.buffer[self.start:] + chunk if unread else chunk
            self.start = 0


def read_chat_forever(session):
    """The seed's read loop: each line is relayed or, if a command, answered."""
    reader = LineReader(session.sock)
    try:
        line = reader.readline()
        while line is not None and not session.closed:
            if not line.startswith(b"/") or line.startswith(b"//"):
                relay(session, line)
            elif not run_command(session, line[:-1]):
                return  # /quit
            line = reader.readline()
    except LineTooLong:
        session.deliver(b"/error line-too-long\n")
    except (OSError, EOFError):  # reset or gone: costs only this connection
        pass


def run_command(session, line):
    """Answers one command line (without its LF); returns False for /quit."""
    word, _, argument = line.partition(b" ")
    if word == b"/join":
        if ROOM_NAME.fullmatch(argument):
            leave_room(session)
            enter_room(session, argument)
            session.deliver(b"/joined " + argument + b"\n")
        else:
            session.deliver(b"/error bad-room\n")
    elif word == b"/stats":
        session.deliver(counters.stats_line().encode() + b"\n")
    elif word == b"/quit":
        return False
    else:
        session.deliver(b"/error unknown-command\n")
    return True


def serve_participant(session):
    """A connection's green thread: the read loop, then what was queued, then close."""
    try:
        read_chat_forever(session)
    finally:
        leave_room(session)
        writer = session.writer
        if writer is not None:
            writer.wait()  # sends what was queued (bounded by --write-timeout-ms)
        session.sock.close()
        sessions.discard(session)
        counters.clients -= 1


# --- accept loop --------------------------------------------------------------------

def accept_forever(server):
    backoff = 0.0
    while True:
        try:
            sock, _ = server.accept()
        except OSError as error:
            if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                continue  # that client gave up or was refused; the next one may not
            # Out of descriptors (EMFILE, ENFILE) or memory: wait for some to be freed,
            # keep serving the connections we have, never spin.
            if not backoff:
                print(f"chat_server.py: accept: {error.strerror}; backing off",
                      file=sys.stderr, flush=True)
            backoff = min(max(backoff * 2, ACCEPT_BACKOFF_FIRST), ACCEPT_BACKOFF_MAX)
            eventlet.sleep(backoff)
            continue
        backoff = 0.0
        if options.max_clients and len(sessions) >= options.max_clients:
            reject(sock)
        else:
            admit(sock)


def admit(sock):
    """The seed's: a new participant in the lobby, and a green thread to serve it."""
    # Lines are written whole, often one at a time: Nagle would hold them for an ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    session = Session(sock)
    try:
        eventlet.spawn_n(serve_participant, session)
    except MemoryError:  # no green thread to serve it
        reject(sock)
        return
    sessions.add(session)
    counters.clients += 1
    enter_room(session, LOBBY)


def reject(sock):
    """/error server-full and close. A fresh socket's buffer takes the line at once."""
    counters.rejected += 1
    try:
        counters.bytes_out += sock.fd.send(b"/error server-full\n")
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


# --- main ---------------------------------------------------------------------------

def parse_options(argv):
    def count(minimum):
        def parse(text):
            value = int(text)
            if value < minimum:
                raise argparse.ArgumentTypeError(f"must be at least {minimum}")
            return value
        parse.__name__ = "integer"
        return parse

    parser = argparse.ArgumentParser(description="Chat protocol v1 server, eventlet variant")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=count(0), default=3000, help="0 picks a free port")
    parser.add_argument("--max-line", type=count(1), default=4096,
                        help="content bytes per line")
    parser.add_argument("--max-pending", type=count(1), default=1048576,
                        help="bytes queued for one receiver")
    parser.add_argument("--write-timeout-ms", type=count(1), default=5000,
                        help="disconnect a receiver that takes no byte for this long")
    parser.add_argument("--max-clients", type=count(0), default=0, help="0 = no limit")
    parsed = parser.parse_args(argv)
    if parsed.port > 65535:
        parser.error("argument --port: must be at most 65535")
    return parsed


def catch_stop_signals():
    """Returns a descriptor that becomes readable on SIGINT or SIGTERM. Python runs signal
    handlers only between bytecodes, and the hub may sleep in epoll for a minute, so the
    signal must also write to a pipe that wakes a green thread."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    return read_end


def main(argv):
    global options
    options = parse_options(argv)
    stop_signals = catch_stop_signals()  # before "listening": a signal may follow it at once
    try:
        family, _, _, _, address = socket.getaddrinfo(
            options.bind, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        # No SO_REUSEPORT: a second server on the same port must fail, not share it.
        server = eventlet.listen(address, family, backlog=socket.SOMAXCONN, reuse_port=False)
    except OSError as error:
        sys.exit(f"chat_server.py: cannot listen on {options.bind}:{options.port}: "
                 f"{error.strerror or error}")
    host, port = server.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"listening on {shown}:{port} variant={VARIANT}", flush=True)

    acceptor = eventlet.spawn(accept_forever, server)
    trampoline(stop_signals, read=True)

    acceptor.kill()
    server.close()
    for session in list(sessions):
        session.close_now()
    with eventlet.Timeout(SHUTDOWN_GRACE, False):
        while sessions:
            eventlet.sleep(0.01)
    print(counters.stats_line(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
