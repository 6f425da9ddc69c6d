#include "chat/command.hpp"

#include <gtest/gtest.h>

namespace chat {
namespace {

TEST(Command, ChatLines) {
  for (std::string_view line : {"", "hello", " /join x", "//join x", "//", "a/b"}) {
    EXPECT_EQ(parse_command(line).kind, CommandKind::chat) << line;
  }
}

TEST(Command, Join) {
  auto c = parse_command("/join blue");
  EXPECT_EQ(c.kind, CommandKind::join);
  EXPECT_EQ(c.argument, "blue");
  c = parse_command("/join two words");
  EXPECT_EQ(c.kind, CommandKind::join);
  EXPECT_EQ(c.argument, "two words");  // and is_valid_room_name refuses it
  c = parse_command("/join");
  EXPECT_EQ(c.kind, CommandKind::join);
  EXPECT_EQ(c.argument, "");
}

TEST(Command, StatsAndQuit) {
  EXPECT_EQ(parse_command("/stats").kind, CommandKind::stats);
  EXPECT_EQ(parse_command("/stats please").kind, CommandKind::stats);
  EXPECT_EQ(parse_command("/quit").kind, CommandKind::quit);
}

TEST(Command, Unknown) {
  using namespace std::string_view_literals;
  for (std::string_view line : {"/"sv, "/JOIN x"sv, "/joinx"sv, "/stat"sv, "/quitnow"sv, "/ join"sv, "/\0"sv}) {
    EXPECT_EQ(parse_command(line).kind, CommandKind::unknown) << line;
  }
}

TEST(RoomName, Valid) {
  EXPECT_TRUE(is_valid_room_name("a"));
  EXPECT_TRUE(is_valid_room_name("A-Za-z0-9._"));
  EXPECT_TRUE(is_valid_room_name(std::string(64, 'r')));
}

TEST(RoomName, Invalid) {
  EXPECT_FALSE(is_valid_room_name(""));
  EXPECT_FALSE(is_valid_room_name(std::string(65, 'r')));
  for (std::string_view name : {"a b", "a/b", "caf\xc3\xa9", "tab\t", "x\r", "a:b", "*"}) {
    EXPECT_FALSE(is_valid_room_name(name)) << name;
  }
  EXPECT_FALSE(is_valid_room_name(std::string_view("a\0", 2)));
}

}  // namespace
}  // namespace chat
