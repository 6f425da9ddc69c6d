// The chat protocol's wire (docs/protocol.md): no handshake, every client in the lobby on
// connecting, "/join rN", a chat line sent as it is, and LF-terminated lines received.
#include "engine.hpp"
#include "wire_framed.hpp"

namespace loadgen {

namespace {

// A server line longer than this is not one of ours; stop carrying it rather than grow.
constexpr std::size_t max_partial_bytes = 1 << 20;

class ChatWire final : public Wire {
 public:
  void hello(std::string& out, std::uint32_t) const override { out.clear(); }
  void join(std::string& out, std::uint32_t room) const override { out = join_command(room); }
  std::string_view publish(std::string&, std::uint32_t, std::string_view line) const override { return line; }
  bool has_lobby() const override { return true; }

  // Each line is classified once, here; a line split over reads is completed in partial.
  void decode(Connection& connection, std::string_view data, std::int64_t now, MessageSink& sink) const override {
    while (!data.empty() && connection.state == ConnectionState::open) {
      const auto end = data.find('\n');
      if (end == std::string_view::npos) {
        if (connection.partial.size() + data.size() <= max_partial_bytes) connection.partial.append(data);
        break;
      }
      std::string_view line = data.substr(0, end);
      if (!connection.partial.empty()) {
        connection.partial.append(line);
        line = connection.partial;
      }
      sink.on_message(connection, Message{reply_kind(line), line}, now);
      connection.partial.clear();
      data.remove_prefix(end + 1);
    }
  }
};

}  // namespace

std::unique_ptr<Wire> make_chat_wire() { return std::make_unique<ChatWire>(); }

}  // namespace loadgen
