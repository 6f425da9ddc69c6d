// The command line of loadgen, parsed once in main.cpp and read everywhere else.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace loadgen {

enum class Mode { idle, broadcast, chat };
// automatic: io_uring where the kernel allows it, else epoll (docs/loadgen.md, Engines).
enum class EngineKind { automatic, uring, epoll };
// What the server speaks (docs/loadgen.md, "Protocols"): the chat protocol, or a broker's.
enum class Protocol { chat, nats, redis, mqtt };

struct Options {
  Mode mode = Mode::idle;
  // Common to every mode (docs/loadgen.md, "Running it").
  std::string host = "127.0.0.1";
  std::uint16_t port = 3000;
  std::uint32_t clients = 100;
  pid_t server_pid = 0;  // 0: no per-process memory or CPU figures
  std::string json_path;
  unsigned threads = 1;
  unsigned connect_concurrency = 256;
  double connect_rate = 0;  // connects started per second; 0: as fast as --connect-concurrency allows
  std::string source_ips;   // "A.B.C.D" or "A.B.C.D-A.B.C.E"; empty: let the kernel choose
  double connect_timeout_s = 10;
  double drain_s = 5;
  bool quiet = false;
  EngineKind engine = EngineKind::automatic;
  Protocol protocol = Protocol::chat;
  unsigned uring_buffers = 2048;  // io_uring engine: receive buffers (4 KiB) per worker
  unsigned tick_us = 250;         // chat sends on this grid; io_uring workers sleep at most this long (0: neither)
  // idle
  unsigned steps = 5;
  double hold_s = 2;
  // broadcast
  unsigned messages = 100;
  double interval_ms = 10;
  // broadcast and chat: bytes per line including its LF
  unsigned size = 64;
  // chat
  unsigned room_size = 10;
  std::vector<double> rates{10};
  double duration_s = 5;
  double warmup_s = 1;
  // chat --find-ceiling (docs/loadgen.md, "Finding the ceiling"): rates[0] is where it starts.
  bool find_ceiling = false;
  double ceiling_growth = 2;        // factor between rates until a bracket is found
  double ceiling_precision = 1.05;  // stop once failed rate / passed rate <= this
  unsigned ceiling_max_steps = 14;  // measured windows in the whole search
  double p99_bar_ms = 100;
  double late_bar_pct = 1;  // a rate passes with at most this % of its sends late
  // The server's cgroup directory (docs/loadgen.md, "Capacity per server core"): every
  // window records what its CPU quota did (cpu.server_cgroup). Empty: not read.
  std::string server_cgroup;
  // chat, many hosts (docs/distributed.md): this process runs clients client_offset ..
  // client_offset + clients - 1 of clients_total (0: a whole run of --clients).
  std::uint32_t clients_total = 0, client_offset = 0;
  std::int64_t start_at_ms = 0;  // UNIX ms at which the schedule starts; 0: once joined
  double clock_offset_ms = 0;    // test knob: this process's clocks read this much ahead
  // This host's UNIX clock less the run's reference clock, as the launcher measured it, and
  // the bound on that measurement's error (0: not measured; lines from other processes are
  // then never timed). docs/distributed.md, "Clocks".
  std::int64_t clock_offset_ns = 0, clock_offset_bound_ns = 0;
};

const char* mode_name(Mode mode);

}  // namespace loadgen
