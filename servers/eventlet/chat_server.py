#!/usr/bin/python3
"""The seed's chat server, grown into chat protocol v1 (docs/protocol.md).

The shape is the seed's: a listener, one green thread per connection running a read loop,
a set of participants (here grouped in rooms), and relay of each line to the others from
the sender's green thread. What the protocol adds: framing with a line limit, commands,
counters, a bounded output queue per receiver that only a full socket fills (written by a
green thread that exists only while it is not empty, so a receiver that stops reading
never stalls the sender), and a lingering close so that a last reply is not lost to a
reset.

Run with Debian's interpreter, which has python3-eventlet:
    /usr/bin/python3 servers/eventlet/chat_server.py --port 0
"""

import argparse
import bisect
import collections
import errno
import itertools
import os
import re
import signal
import socket
import sys
import time

# Host names are resolved once, at start: eventlet's green DNS (dnspython) is not needed,
# and loading it would add some 25 MB to the resident memory every measurement starts from.
os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")
# Two more imports the server does not need, each heavy: eventlet 0.33 imports distutils,
# which Debian's setuptools answers with its own copy through pkg_resources (by an import
# hook its .pth file installs at start-up: taken out here), and pyOpenSSL if it is
# installed (no TLS here). Without them the server starts with 21 MB resident instead of
# 43 MB, in a quarter of the time (docs/servers.md).
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "_distutils_hack"]
sys.modules.setdefault("OpenSSL", None)  # None: `import OpenSSL` fails, eventlet goes on

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
REFUSED_LINGER_MAX = 0.100  # a flood of refusals must not pin descriptors
SHUTDOWN_GRACE = 1.5   # seconds to let connections close; the contract allows 2
SCRATCH = bytearray(READ_SIZE)  # input read only to be discarded; never looked at


# --- counters -----------------------------------------------------------------------

class Counters:
    """The /stats counters, in docs/protocol.md's words. One process, one thread: plain ints."""

    def __init__(self):
        self.clients = 0    # admitted and not closing
        self.lingering = 0  # closing: last output, then input discarded until EOF
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
                f"slow_disconnects={self.slow_disconnects} rejected={self.rejected} "
                f"lingering={self.lingering}")


options = None
counters = Counters()
rooms = {}          # room name -> set of Sessions in it; an empty room is forgotten
sessions = set()    # every open connection, lingering ones too: --max-clients, shutdown


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


def relay(sender, lines):
    """The seed's loop: every other participant in the sender's room gets the lines read
    together from the sender, joined once into one bytes object shared by all of them
    (immutable, so stored once whatever the number of receivers) and written with one
    send each."""
    counters.lines_in += len(lines)
    if len(lines) == 1:
        data = lines[0]
        ends = (len(data),)
    else:
        data = b"".join(lines)
        ends = tuple(itertools.accumulate(map(len, lines)))
    for participant in rooms[sender.room]:
        if participant is not sender:  # Don't echo
            participant.deliver(data, ends)


# --- session ------------------------------------------------------------------------

class WriteTimeout(Exception):
    pass


class LingerOver(Exception):
    pass


class Session:
    """One connection. Its read loop runs in the green thread that accepted it. Output is
    written at once by whichever green thread produces it, while nothing is queued; what
    the socket does not take is queued and written by a writer green thread that exists
    only until the queue is empty."""

    __slots__ = ("sock", "fd", "room", "outbox", "pending", "head_written", "head_lines",
                 "writer", "closing", "closed")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fd                  # the non-blocking socket under the green one
        self.room = None
        self.outbox = collections.deque()  # (data, line ends in data), shared bytes objects
        self.pending = 0                   # bytes queued and not yet written
        self.head_written = 0              # bytes of outbox[0] already written
        self.head_lines = 0                # chat lines of outbox[0] already counted
        self.writer = None                 # the writer green thread, while outbox is not empty
        self.closing = False               # a close is decided: lingering
        self.closed = False

    def deliver(self, data, ends=()):
        """Writes or queues data for this receiver without blocking the caller. ends: the
        offsets in data where each chat line ends (empty for a reply), for lines_out."""
        if self.closed:
            return
        written = 0
        if self.writer is None:  # nothing queued: the socket may take it all now
            try:
                written = self.fd.send(data)
            except BlockingIOError:
                pass
            except OSError:  # reset or gone: costs only this connection
                self.close_now()
                return
            counters.bytes_out += written
            if written == len(data):
                counters.lines_out += len(ends)
                return
        if self.pending + len(data) - written > options.max_pending:
            self.disconnect_slow()
            return
        self.outbox.append((data, ends))
        self.pending += len(data)
        self.consume(written)
        if self.writer is None:
            self.writer = eventlet.spawn(self.write_pending)

    def write_pending(self):
        try:
            while self.outbox and not self.closed:
                buffers = [data for data, _ in itertools.islice(self.outbox, IOV_MAX)]
                if self.head_written:
                    buffers[0] = memoryview(buffers[0])[self.head_written:]
                written = send_some(self.fd, buffers, options.write_timeout_ms / 1000)
                counters.bytes_out += written
                self.consume(written)
        except WriteTimeout:
            self.disconnect_slow()
        except OSError:  # reset or gone: costs only this connection
            self.close_now()
        finally:
            self.writer = None

    def consume(self, written):
        """Drops the data written in full; a chat line counts in lines_out when its last
        byte is written."""
        self.pending -= written
        written += self.head_written
        outbox = self.outbox
        while outbox and written >= len(outbox[0][0]):
            data, ends = outbox.popleft()
            written -= len(data)
            counters.lines_out += len(ends) - self.head_lines
            self.head_lines = 0
        self.head_written = written
        if written:
            done = bisect.bisect_right(outbox[0][1], written)
            counters.lines_out += done - self.head_lines
            self.head_lines = done

    def drop_output(self):
        self.outbox.clear()
        self.pending = self.head_written = self.head_lines = 0

    def disconnect_slow(self):
        """A receiver over --max-pending or --write-timeout-ms. While closing, the queue is
        given up but the connection still lingers (its peer may be reading again soon)."""
        if self.closed:
            return
        counters.slow_disconnects += 1
        if self.closing:
            self.drop_output()
        else:
            self.close_now()

    def close_now(self):
        """Drops what is queued and shuts the socket down; the connection's green thread
        then sees the end of input and closes the descriptor."""
        if self.closed:
            return
        self.closed = True
        self.drop_output()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def send_some(fd, buffers, timeout):
    """Writes what the socket takes now in one gathered sendmsg, first waiting up to
    timeout for it to take anything. (Eventlet's green socket has no green sendmsg, and
    its send would need the lines joined, a copy per receiver.)"""
    while True:
        try:
            return fd.sendmsg(buffers)
        except BlockingIOError:
            trampoline(fd, write=True, timeout=timeout, timeout_exc=WriteTimeout())


class Input:
    """A connection's input, read with fairness between readers for less than a hub
    round trip per recv. A green recv that finds data returns without yielding, so a
    flooding client would run alone. But a recv that found nothing has waited in the hub
    (trampoline), where every other green thread had its turn. So the reader yields
    (eventlet.sleep(0)) only when a recv found data and the one before it did too: a
    flooder still gets one read per round of the hub, and a client that sends a line at
    a time costs no extra round trip. (Waiting in the hub first instead, to save the recv
    that finds nothing, measured slower: each wait costs two epoll_ctl calls, and under
    load the data is usually there already.)"""

    __slots__ = ("fd", "had_turn")

    def __init__(self, fd):
        self.fd = fd
        self.had_turn = False  # the last recv found data without waiting in the hub

    def _take_turn(self, receive, argument):
        while True:
            try:
                result = receive(argument)
            except BlockingIOError:
                trampoline(self.fd, read=True)
                self.had_turn = False
                continue
            if self.had_turn:
                eventlet.sleep(0)
            self.had_turn = True
            return result

    def recv(self):
        """The next bytes (b"" at the end of input)."""
        return self._take_turn(self.fd.recv, READ_SIZE)

    def discard(self):
        """Reads and throws away the next bytes; returns how many (0 at the end of input)."""
        return self._take_turn(self.fd.recv_into, SCRATCH)


class LineReader:
    """The seed's reader.readline(), bounded and taken a read at a time: lines() returns
    every complete line in what has been read (content + LF, a CR before the LF dropped),
    read() reads more. Bytes after the last LF at the end of input are not a line. Holds
    at most max-line + one read of bytes."""

    __slots__ = ("input", "buffer")

    def __init__(self, fd):
        self.input = Input(fd)
        self.buffer = b""

    def lines(self):
        """The complete lines read so far, and whether a line over --max-line follows
        them (the connection then ends after these lines)."""
        buffer, start, max_line = self.buffer, 0, options.max_line
        lines = []
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if end > start and buffer[end - 1] == 0x0D:  # CR before LF
                line = buffer[start:end - 1] + b"\n"
            else:
                line = buffer[start:end + 1]
            start = end + 1
            if len(line) - 1 > max_line:
                return lines, True
            lines.append(line)
        # No LF yet: decide as soon as more than max-line content bytes are here. A CR at
        # the end may still be dropped, so it does not count yet.
        self.buffer = buffer = buffer[start:] if start else buffer
        unread = len(buffer) - (1 if buffer.endswith(b"\r") else 0)
        return lines, unread > max_line

    def read(self):
        """Reads more input; False at the end of it."""
        chunk = self.input.recv()
        if not chunk:
            return False
        counters.bytes_in += len(chunk)
        self.buffer = self.buffer + chunk if self.buffer else chunk
        return True


def read_chat_forever(session):
    """The seed's read loop: chat lines are relayed, commands answered. Returns True if
    the server decided to close (/quit, line too long), False at the end of input."""
    reader = LineReader(session.fd)
    try:
        while not session.closed:
            lines, too_long = reader.lines()
            chat = []
            for line in lines:
                if not line.startswith(b"/") or line.startswith(b"//"):
                    chat.append(line)
                    continue
                if chat:  # commands act in order: a /join moves later lines only
                    relay(session, chat)
                    chat = []
                if not run_command(session, line[:-1]):
                    return True  # /quit
            if chat:
                relay(session, chat)
            if too_long:
                session.deliver(b"/error line-too-long\n")
                return True
            if not reader.read():
                return False
    except (OSError, EOFError):  # reset or gone: costs only this connection
        pass
    return False


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
        try:
            close_decided = read_chat_forever(session)
        finally:
            leave_room(session)
            counters.clients -= 1
        if close_decided:
            counters.lingering += 1
            try:
                linger(session, options.linger_ms / 1000)
            finally:
                counters.lingering -= 1
        elif session.writer is not None:
            session.writer.wait()  # sends what was queued (bounded by --write-timeout-ms)
    finally:
        session.sock.close()
        sessions.discard(session)


# --- lingering close ----------------------------------------------------------------

def linger(session, seconds):
    """nginx's lingering close: writes what is queued (under --write-timeout-ms) while
    reading and discarding input, so that a client blocked writing a flood is never
    deadlocked against us; then shuts down the write side and reads and discards until
    EOF, `seconds` or --linger-bytes, so that the close does not turn the last reply
    into a reset."""
    session.closing = True
    writer = session.writer
    if writer is not None:
        discarder = eventlet.spawn(discard_input, session, None, None)
        writer.wait()
        discarder.kill()
    if session.closed:
        return
    try:
        session.sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    discard_input(session, time.monotonic() + seconds, options.linger_bytes)


def discard_input(session, deadline, limit):
    """Reads and discards until EOF, the deadline or limit bytes (None: no bound)."""
    source, received = Input(session.fd), 0
    try:
        while not session.closed and (limit is None or received < limit):
            if deadline is None:
                count = source.discard()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                with eventlet.Timeout(left, LingerOver()):
                    count = source.discard()
            if not count:
                return
            counters.bytes_in += count
            received += count
    except (OSError, LingerOver):
        pass


# --- accept loop --------------------------------------------------------------------

def accept_forever(listener):
    backoff = 0.0
    while True:
        try:
            sock, _ = listener.accept()
        except OSError as error:
            if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                continue  # that client gave up or was refused; the next one may not
            # Out of descriptors (EMFILE, ENFILE) or memory: wait for some to be freed,
            # keep serving the connections we have, never spin.
            if not backoff:
                print(f"chat-eventlet: accept: {error.strerror}; backing off",
                      file=sys.stderr, flush=True)
            backoff = min(max(backoff * 2, ACCEPT_BACKOFF_FIRST), ACCEPT_BACKOFF_MAX)
            eventlet.sleep(backoff)
            continue
        backoff = 0.0
        session = Session(sock)
        full = options.max_clients and len(sessions) >= options.max_clients
        try:
            eventlet.spawn_n(serve_refused if full else serve_participant, session)
        except MemoryError:  # no green thread to serve it: refused without lingering
            counters.rejected += 1
            try:
                counters.bytes_out += sock.fd.send(b"/error server-full\n")
            except OSError:
                pass
            sock.close()
            continue
        sessions.add(session)
        if full:
            counters.rejected += 1
            counters.lingering += 1
        else:
            admit(session)


def admit(session):
    """The seed's: a new participant in the lobby."""
    # Lines are written whole, often one at a time: Nagle would hold them for an ACK.
    session.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    counters.clients += 1
    enter_room(session, LOBBY)


def serve_refused(session):
    """/error server-full, then a short lingering close. A fresh socket takes the line."""
    try:
        session.deliver(b"/error server-full\n")
        linger(session, min(options.linger_ms / 1000, REFUSED_LINGER_MAX))
    finally:
        counters.lingering -= 1
        session.sock.close()
        sessions.discard(session)


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

    parser = argparse.ArgumentParser(
        prog="chat-eventlet", description="Chat protocol v1 server, eventlet variant: one process, one OS\n"
                                   "thread, by design (no --threads; docs/servers.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="More in docs/servers.md and docs/protocol.md;\n"
               "exit statuses in docs/exit-status.md.")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=count(0), default=3000, help="0 picks a free port")
    parser.add_argument("--max-line", type=count(1), default=4096,
                        help="content bytes per line")
    parser.add_argument("--max-pending", type=count(1), default=1048576,
                        help="bytes queued for one receiver")
    parser.add_argument("--write-timeout-ms", type=count(1), default=5000,
                        help="disconnect a receiver that takes no byte for this long")
    parser.add_argument("--max-clients", type=count(0), default=0, help="0 = no limit")
    parser.add_argument("--linger-ms", type=count(0), default=1000,
                        help="after a close is decided, read and discard input this long")
    parser.add_argument("--linger-bytes", type=count(0), default=4194304,
                        help="... or until this many bytes were discarded")
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
        listener = eventlet.listen(address, family, backlog=socket.SOMAXCONN, reuse_port=False)
    except OSError as error:
        print(f"chat-eventlet: cannot listen on {options.bind}:{options.port}: "
              f"{error.strerror or error}", file=sys.stderr, flush=True)
        return 1
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"listening on {shown}:{port} variant={VARIANT}", flush=True)

    acceptor = eventlet.spawn(accept_forever, listener)
    trampoline(stop_signals, read=True)

    acceptor.kill()
    listener.close()
    for session in list(sessions):
        session.close_now()
    with eventlet.Timeout(SHUTDOWN_GRACE, False):
        while sessions:
            eventlet.sleep(0.01)
    print(counters.stats_line(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
