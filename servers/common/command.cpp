#include "chat/command.hpp"

#include <algorithm>

namespace chat {

Command parse_command(std::string_view line) noexcept {
  if (!line.starts_with('/') || line.starts_with("//")) return {CommandKind::chat, {}};
  const auto space = line.find(' ');
  const std::string_view word = line.substr(0, space);
  const std::string_view argument =
      space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  if (word == "/join") return {CommandKind::join, argument};
  if (word == "/stats") return {CommandKind::stats, {}};
  if (word == "/quit") return {CommandKind::quit, {}};
  return {CommandKind::unknown, {}};
}

bool is_valid_room_name(std::string_view name) noexcept {
  constexpr std::size_t kMaxRoomName = 64;
  const auto allowed = [](unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  };
  return !name.empty() && name.size() <= kMaxRoomName && std::all_of(name.begin(), name.end(), allowed);
}

}  // namespace chat
