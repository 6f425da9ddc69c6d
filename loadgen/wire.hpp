// The seam between loadgen and a server's protocol (--protocol; docs/loadgen.md, "Protocols"):
// what a client sends to connect, to join a room and to send a chat line, and how the bytes
// it receives become messages. The scenarios and the engine see only this; one Wire per
// protocol: the chat protocol (wire_chat.cpp, docs/protocol.md) and the brokers people
// deploy instead of a chat server, NATS, Redis pub/sub and MQTT 5 (wire_nats.cpp,
// wire_redis.cpp, wire_mqtt.cpp, on the framing of wire_framed.hpp).
//
// Whatever the protocol, the payload is the chat line as the chat protocol has it (protocol.hpp:
// sender, sequence number and intended send time, padded to --size bytes with its LF), so
// latency, loss, duplicates and order are judged the same way for every server.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "options.hpp"
#include "protocol.hpp"

namespace loadgen {

struct Connection;

// One message a decoder found: a chat line (kind none, the line without its LF), or a
// reply of the server's (joined, an error, ...), with its text.
struct Message {
  Reply kind;
  std::string_view text;
};

// Where a decoder's messages go: the worker that read the bytes, or a test.
class MessageSink {
 public:
  // A message of connection's, in bytes read at now_ns.
  virtual void on_message(Connection& connection, const Message& message, std::int64_t now_ns) = 0;
  // Bytes the protocol answers with at once (a NATS PONG to the server's PING).
  virtual void answer(Connection& connection, std::string_view bytes) = 0;
  // The server's bytes cannot be parsed (why): nothing after them can be read.
  virtual void garbled(Connection& connection, std::string_view why) = 0;

 protected:
  ~MessageSink() = default;
};

class Wire {
 public:
  virtual ~Wire() = default;

  // What a client sends once its connection opens, into out (cleared first; left empty when
  // the protocol has no handshake). client: the global client id.
  virtual void hello(std::string& out, std::uint32_t client) const = 0;
  // Joining room number `room` (rooms are r0, r1, ...), into out (cleared first).
  virtual void join(std::string& out, std::uint32_t room) const = 0;
  // The bytes that send a chat line (with its LF) to the room: the line itself, or a frame
  // around it built in scratch.
  virtual std::string_view publish(std::string& scratch, std::uint32_t room, std::string_view line) const = 0;
  // True when every client is in one room on connecting (the chat protocol's lobby), so
  // broadcast joins none; a broker delivers nothing to a client that has not subscribed.
  virtual bool has_lobby() const = 0;
  // Hands every complete message in data (read from connection at now_ns) to sink, in
  // order, and keeps the start of an incomplete one in connection.partial.
  virtual void decode(Connection& connection, std::string_view data, std::int64_t now_ns, MessageSink& sink) const = 0;
};

// The wire of --protocol; client_offset: the global id of this process's first client (a
// broker that hands a sender its own line back is told apart by the sender id it carries).
std::unique_ptr<Wire> make_wire(Protocol protocol, std::uint32_t client_offset);

// "chat", "nats", "redis", "mqtt": the --protocol names.
const char* protocol_name(Protocol protocol);

// A room's name on a broker: "r" and its number, as the chat protocol names rooms.
std::string room_name(std::uint32_t room);

}  // namespace loadgen
