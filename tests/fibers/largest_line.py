"""chat-fibers relays the largest line (--max-line bytes) and refuses the next size up,
on the given --stack-size: the deepest per-connection path runs on a small stack.

usage: largest_line.py CHAT_FIBERS STACK_SIZE
"""
import signal
import socket
import subprocess
import sys

server_path, stack_size = sys.argv[1], sys.argv[2]
MAX_LINE = 4096
server = subprocess.Popen([server_path, "--port", "0", "--stack-size", stack_size],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    port = int(server.stdout.readline().split()[2].rsplit(":", 1)[1])

    def connect():
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        return s

    def read_exactly(s, n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    sender, receiver = connect(), connect()
    sender.sendall(b"/stats\n")  # both admitted before the line is sent
    sender_lines = sender.makefile("rb")
    assert sender_lines.readline().startswith(b"/stats "), "no /stats reply"
    line = bytes(range(256)).replace(b"\n", b"") * 17
    line = line[:MAX_LINE] + b"\n"
    # In small pieces, so the decoder assembles the line across many reads.
    for i in range(0, len(line), 1000):
        sender.sendall(line[i:i + 1000])
    assert read_exactly(receiver, len(line)) == line, "largest line not relayed intact"
    sender.sendall(b"x" * (MAX_LINE + 1) + b"\n")
    reply = sender_lines.readline()
    assert reply == b"/error line-too-long\n", reply
    assert reply.endswith(b"/error line-too-long\n"), reply
finally:
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=5)
assert server.returncode == 0, (server.returncode, err)
print("ok", stack_size)
