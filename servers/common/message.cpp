#include "chat/message.hpp"

namespace chat {

Message make_message(std::string_view content) {
  std::string bytes;
  bytes.reserve(content.size() + 1);
  bytes.append(content);
  bytes.push_back('\n');
  return std::make_shared<const std::string>(std::move(bytes));
}

namespace replies {
const Message& bad_room() {
  static const Message message = make_message("/error bad-room");
  return message;
}
const Message& unknown_command() {
  static const Message message = make_message("/error unknown-command");
  return message;
}
const Message& line_too_long() {
  static const Message message = make_message("/error line-too-long");
  return message;
}
const Message& server_full() {
  static const Message message = make_message("/error server-full");
  return message;
}
}  // namespace replies

}  // namespace chat
