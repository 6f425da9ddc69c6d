#pragma once
// The counters behind /stats (protocol §Counters).

#include <cstdint>
#include <string>
#include <string_view>

namespace chat {

// Count is std::uint64_t where one thread owns the counters, std::atomic<std::uint64_t>
// where several threads update them. 64 bits: no run is long enough to wrap them.
template <class Count>
struct Counters {
  Count clients{};
  Count lines_in{};
  Count lines_out{};
  Count bytes_in{};
  Count bytes_out{};
  Count slow_disconnects{};
  Count rejected{};
  Count lingering{};  // closing (chat/linger.hpp): out of `clients`, still held
};

// Adds `c` into `total` (a server on several threads, one set of counters each).
template <class Count>
void add(Counters<std::uint64_t>& total, const Counters<Count>& c) {
  total.clients += c.clients;
  total.lines_in += c.lines_in;
  total.lines_out += c.lines_out;
  total.bytes_in += c.bytes_in;
  total.bytes_out += c.bytes_out;
  total.slow_disconnects += c.slow_disconnects;
  total.rejected += c.rejected;
  total.lingering += c.lingering;
}

// "/stats variant=NAME clients=… rooms=… …" without the LF; also what a server prints to
// stderr when it stops.
template <class Count>
std::string stats_line(std::string_view variant, const Counters<Count>& c, std::size_t rooms) {
  const auto field = [](std::string& out, std::string_view key, std::uint64_t value) {
    out.append(" ").append(key).append("=").append(std::to_string(value));
  };
  std::string line = "/stats variant=";
  line.append(variant);
  field(line, "clients", c.clients);
  field(line, "rooms", rooms);
  field(line, "lines_in", c.lines_in);
  field(line, "lines_out", c.lines_out);
  field(line, "bytes_in", c.bytes_in);
  field(line, "bytes_out", c.bytes_out);
  field(line, "slow_disconnects", c.slow_disconnects);
  field(line, "rejected", c.rejected);
  field(line, "lingering", c.lingering);
  return line;
}

// --max-clients: a lingering connection still holds its descriptor, so it still counts.
template <class Count>
bool server_full(const Counters<Count>& c, std::size_t max_clients) {
  return max_clients != 0 && c.clients + c.lingering >= max_clients;
}

}  // namespace chat
