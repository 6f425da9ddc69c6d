#pragma once
// A line on its way out: content + LF, immutable, stored once and shared by every
// receiver's outbox however many there are.

#include <memory>
#include <string>
#include <string_view>

namespace chat {

using Message = std::shared_ptr<const std::string>;

// content + '\n' in one buffer.
Message make_message(std::string_view content);

// Replies whose text never changes are built once per process.
namespace replies {
const Message& bad_room();
const Message& unknown_command();
const Message& line_too_long();
const Message& server_full();
}  // namespace replies

}  // namespace chat
