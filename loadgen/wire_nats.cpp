// NATS (the client protocol of nats-server; docs/loadgen.md, "Protocols"): one subject per
// room, SUB then PING, whose PONG says the subscription is in place; PUB to send, MSG
// delivered; the server's PINGs are answered.
#include "engine.hpp"
#include "wire_framed.hpp"

namespace loadgen {

namespace {

// nats-server's default max_control_line: a control line longer than this is not NATS.
constexpr std::size_t max_control_line = 4096;

class NatsWire final : public FramedWire {
 public:
  explicit NatsWire(std::uint32_t client_offset) : FramedWire("NATS", client_offset) {}

  // Every flag CONNECT leaves out is true: verbose would answer each command with +OK,
  // pedantic would check each subject, and echo would hand a sender its own lines back.
  void hello(std::string& out, std::uint32_t) const override {
    out = R"(CONNECT {"verbose":false,"pedantic":false,"echo":false,"protocol":1,"name":"loadgen"})"
          "\r\n";
  }

  // The server handles a connection's commands in order: its PONG comes after the SUB is in place.
  void join(std::string& out, std::uint32_t room) const override { out = "SUB " + room_name(room) + " 1\r\nPING\r\n"; }

  std::string_view publish(std::string& scratch, std::uint32_t room, std::string_view line) const override {
    scratch.assign("PUB ").append(RoomName(room).view()).push_back(' ');
    append_decimal(scratch, line.size());
    scratch.append("\r\n").append(line).append("\r\n");
    return scratch;
  }

 protected:
  // A control line; MSG (and HMSG) "OP SUBJECT SID [REPLY-TO] [HEADER-BYTES] BYTES" are
  // followed by BYTES of payload and CRLF.
  std::size_t frame_size(std::string_view bytes) const override {
    const auto eol = bytes.find('\n');
    if (eol == std::string_view::npos) return bytes.size() > max_control_line ? garbled : 0;
    if (!bytes.starts_with("MSG ") && !bytes.starts_with("HMSG ")) return eol + 1;
    std::string_view line = bytes.substr(0, eol);
    if (line.ends_with('\r')) line.remove_suffix(1);
    const std::int64_t payload = parse_decimal(line.substr(line.rfind(' ') + 1));
    return payload < 0 ? garbled : eol + 1 + static_cast<std::size_t>(payload) + 2;
  }

  void on_frame(Connection& connection, std::string_view frame, std::int64_t now, MessageSink& sink) const override {
    const std::size_t body = frame.find('\n') + 1;
    if (frame.starts_with("MSG ")) {
      deliver(connection, frame.substr(body, frame.size() - body - 2), now, sink);
      return;
    }
    std::string_view line = frame.substr(0, body);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line == "PING") {
      sink.answer(connection, "PONG\r\n");
    } else if (line == "PONG") {
      sink.on_message(connection, Message{Reply::joined, line}, now);
    } else if (line.starts_with("-ERR")) {
      const bool full = line.find("maximum connections") != std::string_view::npos;
      sink.on_message(connection, Message{full ? Reply::server_full : Reply::error, line}, now);
    } else {
      sink.on_message(connection, Message{Reply::other, line}, now);  // INFO, +OK, HMSG
    }
  }
};

}  // namespace

std::unique_ptr<Wire> make_nats_wire(std::uint32_t client_offset) { return std::make_unique<NatsWire>(client_offset); }

}  // namespace loadgen
