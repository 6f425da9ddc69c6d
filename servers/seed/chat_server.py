#!/usr/bin/python3
"""The seed's chat server (the eventlet chat-server example this project started from),
as written: no rooms, no commands, no limits. It is a row of the matrix (idle and
broadcast only) so that the claim is also measured on its own code. Changed only so
that it runs here today:

1. Python 3 and today's eventlet API: `eventlet.listen` and `eventlet.spawn` in place
   of `api.tcp_listener` and `api.spawn`, `print()` as a function, and the socket files
   opened in binary ('rb', 'wb'): Python 2's str was bytes, so the seed relayed bytes.
2. A flush after each write: the file from makefile('wb') is buffered, and without one a
   short line never leaves.
3. `--port` (default 3000, the seed's; 0 picks a free one) and `--bind` (default
   0.0.0.0, the seed's), and the `listening on ADDR:PORT variant=seed` line of
   docs/protocol.md ("Life cycle") in place of "ChatServer starting up on port 3000".
4. Its prints per line and per participant ("Chat: …", "Participant joined/left
   chat.") dropped: they are logging, not the model, and a stdout pipe nobody reads
   would block the whole process on them.

Everything else is the seed's, including what it does not handle: a write to a
participant that has gone raises in the sender's green thread and ends that sender's
loop; SIGINT ends it through KeyboardInterrupt ("ChatServer exiting.", status 0);
SIGTERM, for which it installs no handler, kills it (status -15).
"""

import argparse

import eventlet

arguments = argparse.ArgumentParser(
    description="The seed's chat server: one process, one OS thread, by design (no --threads)")
arguments.add_argument("--bind", default="0.0.0.0")
arguments.add_argument("--port", type=int, default=3000)
arguments = arguments.parse_args()

participants = [ ]

def read_chat_forever(writer, reader):
    line = reader.readline()
    while line:
        for p in participants:
            if p is not writer: # Don't echo
                p.write(line)
                p.flush()
        line = reader.readline()
    participants.remove(writer)

try:
    server = eventlet.listen((arguments.bind, arguments.port))
    print("listening on %s:%d variant=seed" % server.getsockname()[:2], flush=True)
    while True:
        new_connection, address = server.accept()
        new_writer = new_connection.makefile('wb')
        participants.append(new_writer)
        eventlet.spawn(read_chat_forever, new_writer, new_connection.makefile('rb'))
except KeyboardInterrupt:
    print("ChatServer exiting.")
