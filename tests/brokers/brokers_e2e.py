#!/usr/bin/python3
"""loadgen --protocol against the real brokers (docs/loadgen.md "Protocols"), each started
from its Debian package with the matrix's config (scripts/chatbench/peers.py) on free
loopback ports, its counters read back where it has them:

  chat           30 clients in rooms of 10: every receiver has exactly every line of every
                 other member of its room and none of its own; Redis's copies of a sender's
                 own lines are dropped and counted (lines.own_copies); the broker's counters
                 agree (NATS /varz lines in and out, Redis INFO commandstats PUBLISH calls,
                 mosquitto $SYS lines received).
  broadcast      one sender, 39 receivers: every line to every receiver, counters likewise.
  idle           300 clients hold their connections: the broker counts 300 clients that
                 made the handshake, and closes none (NATS pings every second here: the
                 PINGs must be answered).
  slow_consumer  a broadcast in two slices (docs/distributed.md), the one with a receiver
                 stopped (SIGSTOP) while the lines flow, with the broker's slow-consumer
                 limit lowered so that it is reached in seconds: NATS and Redis disconnect
                 that receiver (receivers_disconnected, its missing lines lost), mosquitto
                 drops its lines silently (lost, and mosquitto's own count of dropped lines
                 says as many); the other receivers lose nothing.

Usage: brokers_e2e.py CASE --broker nats|redis|mosquitto --loadgen PATH [--engine uring|epoll]
(PYTHONPATH=SOURCE_DIR/scripts). Exits 77 (skipped) when the broker is not installed."""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from chatbench.peers import PeerConfig, PeerServer, peer_missing
from chatbench.variants import PEER_BY_NAME

SKIPPED = 77

# What each case adds to the broker's config: counters refreshed every second, and for the
# slow consumer a limit it reaches in seconds (the defaults need tens of MB behind).
SETTINGS = {
    ("mosquitto", None): "sys_interval 1\nconnection_messages true\n",
    ("nats", "idle"): 'ping_interval: "1s"\nping_max: 1\n',
    ("nats", "slow_consumer"): 'write_deadline: "1s"\n',
    ("redis", "slow_consumer"): "client-output-buffer-limit pubsub 1mb 256kb 1\n",
    ("mosquitto", "slow_consumer"): "max_queued_messages 100\n",
}


class Failed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failed(what)


def start_broker(broker, case, directory):
    config = PeerConfig(broker)
    config.server_cpus = f"0-{(os.cpu_count() or 1) - 1}"  # a test is not a measurement: no pinning
    settings = SETTINGS.get((broker, None), "") + SETTINGS.get((broker, case), "")
    return PeerServer(config, directory / f"{broker}.server.log", settings).start()


def loadgen_command(a, server, mode, *options, json_path):
    command = [a.loadgen, mode, "--protocol", PEER_BY_NAME[a.broker].protocol, "--port", str(server.port),
               "--json", str(json_path), "--quiet", *map(str, options)]
    return command + (["--engine", a.engine] if a.engine else [])


def run_loadgen(a, server, mode, *options, directory, timeout=60):
    path = directory / f"{mode}.json"
    run = subprocess.run(loadgen_command(a, server, mode, "--server-pid", server.proc.pid, *options, json_path=path),
                         capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(run.stdout + run.stderr)
    check(run.returncode == 0, f"loadgen {mode} exited {run.returncode}")
    report = json.loads(path.read_text())
    check(report["options"]["protocol"] == PEER_BY_NAME[a.broker].protocol, f"options.protocol {report['options']}")
    check(not report["warnings"], f"warnings: {report['warnings']}")
    return report


# ---------------------------------------------------------------------------------------
# The brokers' own counters


def nats_varz(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/varz", timeout=5) as reply:
        return json.loads(reply.read())


def nats_connz(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/connz?limit=100000", timeout=5) as reply:
        return json.loads(reply.read())


def redis_command(server, *words):
    """One command's reply (a bulk string, RESP2) on a connection of its own."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words))
        reply = b""
        while b"\r\n" not in reply:
            reply += s.recv(65536)
        header, _, body = reply.partition(b"\r\n")
        size = int(header[1:])
        while len(body) < size:
            body += s.recv(65536)
        return body[:size].decode()


def redis_publish_calls(server):
    stats = redis_command(server, "INFO", "commandstats")
    found = re.search(r"cmdstat_publish:calls=(\d+)", stats)
    return int(found.group(1)) if found else 0


def mqtt_packets(data):
    """The whole MQTT packets data starts with, as (first byte, body), and the rest."""
    packets = []
    while True:
        size, shift, at = 0, 0, 1
        while at < len(data):  # the remaining length: 7 bits a byte, the high bit says more
            size |= (data[at] & 0x7F) << shift
            shift, at = shift + 7, at + 1
            if not data[at - 1] & 0x80:
                break
        else:
            return packets, data
        if len(data) < at + size:
            return packets, data
        packets.append((data[0], data[at:at + size]))
        data = data[at + size:]


def mosquitto_sys(server, topics):
    """$SYS values of the given topics, read by a client of its own: the last of 2 s.
    mosquitto refreshes them (every second here) only when its loop wakes, so the retained
    value a new subscriber gets first may predate the run; the refresh after it does not."""
    client = b"sys-reader"
    connect = b"\x00\x04MQTT\x05\x02\x00\x00\x00" + len(client).to_bytes(2, "big") + client
    body = b"\x00\x01\x00" + b"".join(len(t).to_bytes(2, "big") + t.encode() + b"\x00" for t in topics)
    values, data, deadline = {}, b"", time.monotonic() + 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as s:
        s.sendall(bytes([0x10, len(connect)]) + connect + bytes([0x82, len(body)]) + body)
        while time.monotonic() < deadline:
            try:
                data += s.recv(65536)
            except socket.timeout:
                continue
            packets, data = mqtt_packets(data)
            for first, packet in packets:
                if first >> 4 == 3:  # PUBLISH
                    values.update(sys_value(packet))
    return values


def sys_value(packet):
    """{topic: number} of a PUBLISH packet's body (QoS 0, MQTT 5), else {}."""
    try:
        length = int.from_bytes(packet[:2], "big")
        topic = packet[2:2 + length].decode()
        properties = packet[2 + length]
        return {topic: int(float(packet[2 + length + 1 + properties:].decode().split()[0]))}
    except (IndexError, ValueError, UnicodeDecodeError):
        return {}


def counted_by_broker(a, server, published, delivered):
    """The broker's own counts of the lines published to it and delivered by it."""
    if a.broker == "nats":
        varz = nats_varz(server)
        check(varz["in_msgs"] == published and varz["out_msgs"] == delivered,
              f"/varz in_msgs {varz['in_msgs']}, out_msgs {varz['out_msgs']}: loadgen published {published}, "
              f"received {delivered}")
    elif a.broker == "redis":
        calls = redis_publish_calls(server)
        check(calls == published, f"INFO commandstats: {calls} PUBLISH calls, loadgen published {published}")
    else:  # what it sent counts the $SYS lines to the reader too: what it received does not
        topic = "$SYS/broker/publish/messages/received"
        received = mosquitto_sys(server, [topic]).get(topic)
        check(received == published, f"{topic} {received}, loadgen published {published}")


# ---------------------------------------------------------------------------------------
# The cases


def own_copies_expected(a, sent):
    """Copies of their own lines the broker hands back: Redis every one, the others none
    (NATS is told echo:false, MQTT subscriptions have No Local)."""
    return sent if a.broker == "redis" else 0


def check_lines(lines, expected):
    check(lines["delivered"] == lines["expected"] == expected and expected > 0,
          f"delivered {lines['delivered']}, expected {lines['expected']}, should be {expected}")
    for key in ["lost", "outstanding", "duplicated", "reordered", "unknown", "receivers_disconnected"]:
        check(lines[key] == 0, f"lines.{key} = {lines[key]}")


def case_chat(a, server, directory):
    clients, room = 30, 10
    report = run_loadgen(a, server, "chat", "--clients", clients, "--room-size", room, "--rate", 20,
                         "--duration-s", 1, "--warmup-s", 0.3, directory=directory)
    lines = report["lines"]
    check(report["clients_connected"] == clients and lines["receivers"] == clients, f"clients {report['clients_connected']}")
    check_lines(lines, lines["sent"] * (room - 1))
    check(lines["own_copies"] == own_copies_expected(a, lines["sent"]),
          f"own_copies {lines['own_copies']} of {lines['sent']} sent")
    # Exactly every line of every other member of its room, none of its own: per receiver,
    # the next sequence number expected from each member is what that member sent.
    detail = report["loss_detail"]
    sent = dict(zip(detail["senders"]["id"], detail["senders"]["sent"]))
    for receiver in detail["receivers"]:
        me, first = receiver["id"], receiver["room_first"]
        check(first == me // room * room, f"receiver {me} in the room of {first}")
        heard = {first + i: n for i, n in enumerate(receiver["next"])}
        wanted = {m: (0 if m == me else sent[m]) for m in range(first, first + room)}
        check(heard == wanted and not any(receiver["gaps"]), f"receiver {me} heard {heard}, should {wanted}")
    counted_by_broker(a, server, lines["sent"], lines["delivered"])


def case_broadcast(a, server, directory):
    clients, messages = 40, 30
    report = run_loadgen(a, server, "broadcast", "--clients", clients, "--messages", messages,
                         "--interval-ms", 5, directory=directory)
    lines = report["lines"]
    check(lines["sent"] == messages and lines["receivers"] == clients - 1, f"lines {lines}")
    check_lines(lines, messages * (clients - 1))
    check(report["broadcast_completion_us"]["count"] == messages, f"completion {report['broadcast_completion_us']}")
    check(lines["own_copies"] == own_copies_expected(a, messages), f"own_copies {lines['own_copies']}")
    counted_by_broker(a, server, lines["sent"] + lines["sync_sent"], lines["delivered"] + lines["sync_received"])


def handshaken_clients(a, server):
    """The clients the broker counts as having made loadgen's handshake."""
    if a.broker == "nats":  # CONNECT processed: the name it gave is known
        return sum(c.get("name") == "loadgen" for c in nats_connz(server)["connections"])
    if a.broker == "redis":  # HELLO 3 processed: the connection speaks RESP3
        return len(re.findall(r"\bresp=3\b", redis_command(server, "CLIENT", "LIST")))
    server.log.flush()  # mosquitto logs each CONNECT it accepts, with the client id
    return len(re.findall(r"New client connected from \S+ as loadgen-", Path(server.log_path).read_text()))


def case_idle(a, server, directory):
    clients = 300
    path = directory / "idle.json"
    # No --server-pid: the hold then lasts its whole --hold-s, long enough to look.
    run = subprocess.Popen(loadgen_command(a, server, "idle", "--clients", clients, "--steps", 1, "--hold-s", 4,
                                           json_path=path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, deadline = 0, time.monotonic() + 4
    while seen < clients and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.25)
        seen = handshaken_clients(a, server)
    out, _ = run.communicate(timeout=60)
    sys.stdout.write(out.decode())
    check(run.returncode == 0, f"loadgen idle exited {run.returncode}")
    check(seen == clients, f"the broker counted {seen} clients that made the handshake, not {clients}")
    report = json.loads(path.read_text())
    check(report["clients_connected"] == clients and report["closed_by_server"] == 0,
          f"connected {report['clients_connected']}, closed by the server {report['closed_by_server']}")
    check(not report["warnings"], f"warnings: {report['warnings']}")


def case_slow_consumer(a, server, directory):
    """Slice A: the sender and 2 receivers; slice B: 1 receiver, stopped from just before
    the lines start (its receive buffer still small) for 2.5 s of the 3 s they flow."""
    start_at = int(time.time() * 1000) + 2500
    common = ["--clients-total", 4, "--messages", 3000, "--interval-ms", 1, "--size", 8000,
              "--start-at", start_at, "--drain-s", 3]
    runs = {}
    for name, offset, count in [("a", 0, 3), ("b", 3, 1)]:
        runs[name] = subprocess.Popen(
            loadgen_command(a, server, "broadcast", *common, "--clients", count, "--client-offset", offset,
                            json_path=directory / f"{name}.json"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(max(0, (start_at + 950) / 1000 - time.time()))  # the sync ends at T + 0.9 s
    runs["b"].send_signal(signal.SIGSTOP)
    time.sleep(2.5)
    runs["b"].send_signal(signal.SIGCONT)
    for name, run in runs.items():
        out, _ = run.communicate(timeout=60)
        sys.stdout.write(out.decode())
        check(run.returncode == 0, f"loadgen slice {name} exited {run.returncode}")
    merge = subprocess.run([a.loadgen, "merge", str(directory / "a.json"), str(directory / "b.json"),
                            "--json", str(directory / "merged.json")], capture_output=True, text=True)
    check(merge.returncode == 0, f"loadgen merge exited {merge.returncode}: {merge.stderr}")
    slice_a = json.loads((directory / "a.json").read_text())["lines"]
    lines = json.loads((directory / "merged.json").read_text())["lines"]
    print("merged lines:", json.dumps(lines))
    check(slice_a["lost"] == 0 and slice_a["receivers_disconnected"] == 0 and slice_a["receivers"] == 2,
          f"the receivers that kept reading: {slice_a}")
    check(lines["receivers"] == 3 and lines["receivers_with_loss"] == 1 and lines["lost"] > 0
          and lines["outstanding"] == 0 and lines["delivered"] + lines["lost"] == lines["expected"],
          f"merged: {lines}")
    if a.broker == "mosquitto":  # dropped silently: the receiver stays, with gaps
        check(lines["receivers_disconnected"] == 0, f"mosquitto disconnected {lines['receivers_disconnected']}")
        dropped = mosquitto_sys(server, ["$SYS/broker/publish/messages/dropped"])
        check(dropped.get("$SYS/broker/publish/messages/dropped") == lines["lost"],
              f"mosquitto dropped {dropped}, loadgen counted {lines['lost']} lost")
        return
    check(lines["receivers_disconnected"] == 1, f"receivers_disconnected {lines['receivers_disconnected']}")
    if a.broker == "nats":
        check(nats_varz(server)["slow_consumers"] == 1, f"/varz slow_consumers {nats_varz(server)['slow_consumers']}")
    else:
        server.log.flush()
        check("for overcoming of output buffer limits" in Path(server.log_path).read_text(),
              "redis did not log the output buffer limit")


CASES = {"chat": case_chat, "broadcast": case_broadcast, "idle": case_idle, "slow_consumer": case_slow_consumer}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case", choices=CASES)
    p.add_argument("--broker", required=True, choices=[x.name for x in PEER_BY_NAME.values() if x.broker])
    p.add_argument("--loadgen", required=True)
    p.add_argument("--engine", choices=["uring", "epoll"])
    a = p.parse_args()
    why = peer_missing(a.broker)
    if why:
        print(f"skipped: {why}")
        return SKIPPED
    with tempfile.TemporaryDirectory(prefix=f"brokers_e2e.{a.broker}.") as tmp:
        server = start_broker(a.broker, a.case, Path(tmp))
        try:
            CASES[a.case](a, server, Path(tmp))
        except Failed as e:
            print(f"FAIL: {a.broker} {a.case}: {e}")
            return 1
        finally:
            note = server.stop()
        if note:
            print(f"FAIL: {a.broker}: {note}")
            return 1
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
