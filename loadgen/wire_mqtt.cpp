// MQTT 5 at QoS 0 (OASIS MQTT Version 5.0; docs/loadgen.md, "Protocols"): one topic per room,
// a client id per client, subscribed with No Local so that a sender gets no copy of its own
// lines. A packet is a fixed header (type and flags, then the remaining length as a
// variable-length integer) and that many bytes.
#include <unistd.h>

#include <cstdio>

#include "engine.hpp"
#include "wire_framed.hpp"

namespace loadgen {

namespace {

enum PacketType : unsigned char {
  connect = 1,
  connack = 2,
  publish_packet = 3,
  subscribe = 8,
  suback = 9,
  disconnect = 14
};

constexpr unsigned char no_local = 0x04;  // subscription option: not the subscriber's own publications

void append_varint(std::string& out, std::size_t value) {
  do {
    const auto digit = static_cast<unsigned char>(value % 128);
    value /= 128;
    out.push_back(static_cast<char>(value > 0 ? digit | 0x80 : digit));
  } while (value > 0);
}

void append_string(std::string& out, std::string_view text) {
  out.push_back(static_cast<char>(text.size() >> 8));
  out.push_back(static_cast<char>(text.size() & 0xff));
  out.append(text);
}

// A packet: its fixed header, then its variable header and payload as body.
void append_packet(std::string& out, unsigned char first_byte, std::string_view body) {
  out.push_back(static_cast<char>(first_byte));
  append_varint(out, body.size());
  out.append(body);
}

// The variable-length integer at bytes[pos]: (value, bytes it took); (0, 0) when bytes end
// within it; (0, SIZE_MAX) when it is longer than the 4 bytes MQTT allows.
std::pair<std::size_t, std::size_t> read_varint(std::string_view bytes, std::size_t pos) {
  std::size_t value = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    if (pos + i >= bytes.size()) return {0, 0};
    const auto digit = static_cast<unsigned char>(bytes[pos + i]);
    value |= static_cast<std::size_t>(digit & 0x7f) << (7 * i);
    if (!(digit & 0x80)) return {value, i + 1};
  }
  return {0, SIZE_MAX};
}

std::size_t read_u16(std::string_view bytes, std::size_t pos) {
  return pos + 2 > bytes.size() ? SIZE_MAX
                                : static_cast<std::size_t>(static_cast<unsigned char>(bytes[pos])) << 8 |
                                      static_cast<unsigned char>(bytes[pos + 1]);
}

// CONNACK reason codes that mean "no room for another client".
bool refused_for_room(unsigned char reason) {
  return reason == 0x89 /* server busy */ || reason == 0x97 /* quota exceeded */ ||
         reason == 0x9F /* connection rate exceeded */;
}

class MqttWire final : public FramedWire {
 public:
  explicit MqttWire(std::uint32_t client_offset) : FramedWire("MQTT", client_offset), pid_(::getpid()) {}

  // Clean start, no will, no credentials, keep alive 0 (none asked for; a broker with a
  // maximum, mosquitto's 65535 s by default, answers with it, longer than any run).
  void hello(std::string& out, std::uint32_t client) const override {
    std::string body;
    append_string(body, "MQTT");
    body.push_back(5);     // protocol version
    body.push_back(0x02);  // connect flags: clean start
    body.append(2, '\0');  // keep alive
    body.push_back(0);     // no properties
    // A broker takes a second connection with a client's id over from the first: unique per process and client.
    append_string(body, "loadgen-" + std::to_string(pid_) + "-" + std::to_string(client));
    out.clear();
    append_packet(out, connect << 4, body);
  }

  void join(std::string& out, std::uint32_t room) const override {
    std::string body("\0\1", 2);  // packet identifier 1: one subscription per client
    body.push_back(0);            // no properties
    append_string(body, room_name(room));
    body.push_back(static_cast<char>(no_local));  // QoS 0
    out.clear();
    append_packet(out, subscribe << 4 | 0x2, body);  // SUBSCRIBE's flags are 0010
  }

  std::string_view publish(std::string& scratch, std::uint32_t room, std::string_view line) const override {
    const RoomName name(room);
    const std::string_view topic = name.view();
    scratch.clear();
    scratch.push_back(static_cast<char>(publish_packet << 4));  // QoS 0, no retain
    append_varint(scratch, 2 + topic.size() + 1 + line.size());
    append_string(scratch, topic);
    scratch.push_back(0);  // no properties
    scratch.append(line);
    return scratch;
  }

 protected:
  std::size_t frame_size(std::string_view bytes) const override {
    const auto [remaining, length_bytes] = read_varint(bytes, 1);
    if (length_bytes == SIZE_MAX) return garbled;
    return length_bytes == 0 ? 0 : 1 + length_bytes + remaining;
  }

  void on_frame(Connection& connection, std::string_view frame, std::int64_t now, MessageSink& sink) const override {
    const auto type = static_cast<unsigned char>(frame[0]) >> 4;
    const std::string_view body = frame.substr(1 + read_varint(frame, 1).second);
    char text[48];
    auto reply = [&](Reply kind, const char* what, int code) {
      const int n = std::snprintf(text, sizeof text, "%s reason code 0x%02x", what, code);
      sink.on_message(connection, Message{kind, std::string_view(text, static_cast<std::size_t>(n))}, now);
    };
    switch (type) {
      case publish_packet: {
        const std::size_t topic = read_u16(body, 0);
        std::size_t pos = topic == SIZE_MAX ? SIZE_MAX : 2 + topic;
        if (pos != SIZE_MAX && (static_cast<unsigned char>(frame[0]) & 0x06)) pos += 2;  // QoS > 0: a packet id
        const auto [properties, length_bytes] =
            pos < body.size() ? read_varint(body, pos) : std::pair<std::size_t, std::size_t>{0, 0};
        if (length_bytes == 0 || length_bytes == SIZE_MAX || pos + length_bytes + properties > body.size()) {
          sink.on_message(connection, Message{Reply::error, "a PUBLISH packet whose lengths disagree"}, now);
          return;
        }
        deliver(connection, body.substr(pos + length_bytes + properties), now, sink);
        return;
      }
      case connack: {  // flags, reason code, properties
        const int reason = body.size() >= 2 ? static_cast<unsigned char>(body[1]) : 0x81;
        if (reason == 0)
          sink.on_message(connection, Message{Reply::other, "CONNACK"}, now);
        else
          reply(refused_for_room(static_cast<unsigned char>(reason)) ? Reply::server_full : Reply::error, "CONNACK",
                reason);
        return;
      }
      case suback: {  // packet id, properties, one reason code per topic filter
        const auto [properties, length_bytes] = read_varint(body, 2);
        const std::size_t pos = 2 + length_bytes + properties;
        const int reason = length_bytes != 0 && length_bytes != SIZE_MAX && pos < body.size()
                               ? static_cast<unsigned char>(body[pos])
                               : 0x81;
        if (reason < 0x80)
          sink.on_message(connection, Message{Reply::joined, "SUBACK"}, now);
        else
          reply(Reply::error, "SUBACK", reason);
        return;
      }
      case disconnect:
        reply(Reply::error, "DISCONNECT from the broker,", body.empty() ? 0 : static_cast<unsigned char>(body[0]));
        return;
      default:
        sink.on_message(connection, Message{Reply::other, {}}, now);  // PINGRESP, AUTH
        return;
    }
  }

 private:
  pid_t pid_;
};

}  // namespace

std::unique_ptr<Wire> make_mqtt_wire(std::uint32_t client_offset) { return std::make_unique<MqttWire>(client_offset); }

}  // namespace loadgen
