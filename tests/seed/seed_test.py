#!/usr/bin/python3
"""servers/seed/chat_server.py over real sockets: it starts and announces itself as
docs/protocol.md says, relays a line between two clients (it has no /stats to ask), and
ends as the seed does: SIGINT through KeyboardInterrupt with status 0, SIGTERM by the
signal itself.

    /usr/bin/python3 tests/seed/seed_test.py [SeedTest.test_name]
"""

import os
import re
import select
import signal
import socket
import subprocess
import time
import unittest

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "..", "..", "servers", "seed", "chat_server.py")
DEADLINE = 20.0  # seconds for any one step; generous, the machine may be busy


class SeedServer:
    """The server process on a free port of 127.0.0.1, started and ready."""

    def __init__(self):
        self.process = subprocess.Popen(
            ["/usr/bin/python3", SERVER, "--port", "0", "--bind", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.process.stdout], [], [], DEADLINE)
        if not ready:
            self.process.kill()
            raise AssertionError("no listening line within %.0f s" % DEADLINE)
        self.listening_line = self.process.stdout.readline().decode()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+) variant=seed\n",
                             self.listening_line)
        if not match:
            self.process.kill()
            raise AssertionError("bad listening line: %r" % self.listening_line)
        self.port = int(match.group(1))

    def connect(self):
        client = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)
        return client

    def stop(self, signum):
        """Sends signum; returns (exit status, rest of stdout)."""
        self.process.send_signal(signum)
        out, _ = self.process.communicate(timeout=DEADLINE)
        return self.process.returncode, out.decode()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


def read_line(client):
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def wait_until_served(server, clients):
    """The seed adds a participant when its accept loop runs, not when the client's
    connect returns: wait until a line from the last one reaches the first, which proves
    that every one before it was accepted too (accept is in order)."""
    probe = b"probe\n"
    end = time.monotonic() + DEADLINE
    clients[0].settimeout(0.2)
    while time.monotonic() < end:
        clients[-1].sendall(probe)
        try:
            if read_line(clients[0]) == probe:
                break
        except socket.timeout:
            continue
    clients[0].settimeout(DEADLINE)
    # Probes sent before the first was accepted went nowhere; later ones may be in flight.
    time.sleep(0.2)
    for client in clients:
        client.setblocking(False)
        try:
            while client.recv(65536):
                pass
        except BlockingIOError:
            pass
        client.setblocking(True)
        client.settimeout(DEADLINE)


class SeedTest(unittest.TestCase):
    def setUp(self):
        self.server = SeedServer()
        self.addCleanup(self.server.close)

    def test_relays_a_line_to_the_other_client_and_not_back(self):
        alice, bob = self.server.connect(), self.server.connect()
        self.addCleanup(alice.close)
        self.addCleanup(bob.close)
        wait_until_served(self.server, [alice, bob])
        line = b"hello from alice \xff\x00 bytes as they are\n"
        alice.sendall(line)
        self.assertEqual(read_line(bob), line)
        bob.sendall(b"hello back\n")
        # Alice's next line is Bob's: her own was not echoed to her.
        self.assertEqual(read_line(alice), b"hello back\n")

    def test_sigint_ends_it_through_keyboardinterrupt_with_status_0(self):
        status, out = self.server.stop(signal.SIGINT)
        self.assertEqual(status, 0)
        self.assertEqual(out, "ChatServer exiting.\n")

    def test_sigterm_kills_it_as_the_seed_installs_no_handler(self):
        status, out = self.server.stop(signal.SIGTERM)
        self.assertEqual(status, -signal.SIGTERM)
        self.assertEqual(out, "")


if __name__ == "__main__":
    unittest.main()
