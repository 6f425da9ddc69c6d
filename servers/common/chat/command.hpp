#pragma once
// Command parsing (protocol §Chat lines, §Commands). Pure functions on one line's content.

#include <string_view>

namespace chat {

enum class CommandKind { chat, join, stats, quit, unknown };

struct Command {
  CommandKind kind;
  std::string_view argument;  // /join: everything after the first space (maybe empty)
};

// A line that does not start with '/', or starts with "//", is a chat line.
Command parse_command(std::string_view line) noexcept;

// 1-64 bytes of [A-Za-z0-9._-].
bool is_valid_room_name(std::string_view name) noexcept;

}  // namespace chat
