// The chat protocol's wire format as loadgen speaks it (protocol.hpp).
#include "protocol.hpp"

#include <algorithm>
#include <charconv>
#include <sstream>

namespace loadgen {

std::string join_command(std::uint32_t room) { return "/join r" + std::to_string(room) + "\n"; }

Reply reply_kind(std::string_view line) {
  if (!line.starts_with('/') || line.starts_with("//")) return Reply::none;
  if (line == "/error server-full") return Reply::server_full;
  if (line.starts_with("/error")) return Reply::error;
  if (line.starts_with("/joined ")) return Reply::joined;
  if (line.starts_with("/stats ")) return Reply::stats;
  return Reply::other;
}

std::map<std::string, std::string> parse_stats_reply(std::string_view line) {
  std::map<std::string, std::string> values;
  std::istringstream fields{std::string(line.substr(std::min<std::size_t>(line.size(), 7)))};  // after "/stats "
  std::string field;
  while (fields >> field) {
    const auto eq = field.find('=');
    if (eq != std::string::npos) values[field.substr(0, eq)] = field.substr(eq + 1);
  }
  return values;
}

void format_chat_line(std::string& out, std::uint32_t sender, std::uint64_t seq, std::int64_t intended_ns,
                      unsigned size, bool reference_clock) {
  out.clear();
  auto append = [&out](auto number) {
    char digits[24];  // enough for any 64-bit integer
    out.append(digits, std::to_chars(digits, digits + sizeof digits, number).ptr);
    out.push_back(' ');
  };
  append(sender);
  append(seq);
  append(intended_ns);
  if (reference_clock) out.append("r ");
  if (out.size() + 1 < size) out.append(size - 1 - out.size(), 'x');
  out.push_back('\n');
}

std::optional<ChatLine> parse_chat_line(std::string_view line) {
  ChatLine chat{};
  const char* p = line.data();
  const char* end = line.data() + line.size();
  auto field = [&](auto& value) {
    const auto [next, error] = std::from_chars(p, end, value);
    if (error != std::errc() || next == end || *next != ' ') return false;
    p = next + 1;
    return true;
  };
  if (!field(chat.sender) || !field(chat.seq) || !field(chat.intended_ns)) return std::nullopt;
  chat.reference_clock = end - p >= 2 && p[0] == 'r' && p[1] == ' ';  // padding is 'x'
  return chat;
}

}  // namespace loadgen
