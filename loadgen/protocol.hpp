// The chat protocol as loadgen speaks it (docs/protocol.md): the commands it sends, the
// replies it tells apart, and the chat lines it sends and parses. The only place that
// knows the wire format; the engine and the scenarios go through it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace loadgen {

// "/join rROOM\n": loadgen's rooms are named r0, r1, ...
std::string join_command(std::uint32_t room);
inline constexpr std::string_view stats_command = "/stats\n";

// What a received line is. A line that starts with a single '/' is a reply (a chat line
// may start with "//"); everything else is a chat line. The brokers' wires (wire.hpp) sort
// their messages into the same kinds, and one more: own_line, a chat line handed back to
// the client that sent it (Redis pub/sub delivers the publisher's own copy).
enum class Reply { none, joined, stats, server_full, error, other, own_line };
Reply reply_kind(std::string_view line);

// The counters of a "/stats key=value ..." reply, by key.
std::map<std::string, std::string> parse_stats_reply(std::string_view line);

// broadcast's sync line as sent, and as received (without its LF): a chat line, so that
// the seed's server, which knows no commands, relays it like any other (broadcast.cpp).
inline constexpr std::string_view sync_message = "sync\n";
inline constexpr std::string_view sync_line = sync_message.substr(0, sync_message.size() - 1);

// A chat line: "SENDER SEQ INTENDED_NS " padded with 'x' to `size` bytes including LF.
// INTENDED_NS is on the sending process's steady clock, or, followed by "r ", on the run's
// reference clock (a slice with a measured clock offset; docs/distributed.md, "Clocks").
void format_chat_line(std::string& out, std::uint32_t sender, std::uint64_t seq, std::int64_t intended_ns,
                      unsigned size, bool reference_clock = false);
struct ChatLine {
  std::uint32_t sender;
  std::uint64_t seq;
  std::int64_t intended_ns;
  bool reference_clock;
};
std::optional<ChatLine> parse_chat_line(std::string_view line);

}  // namespace loadgen
