// The wires behind make_wire (wire.hpp), and the framing the brokers' wires share: a
// broker's message is a frame whose first bytes tell its size (a NATS control line, a
// RESP3 value, an MQTT fixed header), where the chat protocol's is a line.
#pragma once

#include <charconv>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>

#include "wire.hpp"

namespace loadgen {

std::unique_ptr<Wire> make_chat_wire();
std::unique_ptr<Wire> make_nats_wire(std::uint32_t client_offset);
std::unique_ptr<Wire> make_redis_wire(std::uint32_t client_offset);
std::unique_ptr<Wire> make_mqtt_wire(std::uint32_t client_offset);

class FramedWire : public Wire {
 public:
  // protocol: its name in what loadgen says of bytes it cannot parse.
  FramedWire(const char* protocol, std::uint32_t client_offset) : protocol_(protocol), client_offset_(client_offset) {}

  bool has_lobby() const override { return false; }
  // Frames are handed over straight from the bytes read; only a frame split over reads is
  // copied, into connection.partial, and only until it is whole.
  void decode(Connection& connection, std::string_view data, std::int64_t now_ns, MessageSink& sink) const final;

 protected:
  // frame_size's answer for bytes that no frame of the protocol starts with.
  static constexpr std::size_t garbled = std::numeric_limits<std::size_t>::max();
  // The size of the frame that bytes starts with, which may be more than bytes holds; 0
  // while its first bytes do not tell it yet.
  virtual std::size_t frame_size(std::string_view bytes) const = 0;
  // One whole frame: its message, if any, to the sink.
  virtual void on_frame(Connection& connection, std::string_view frame, std::int64_t now_ns,
                        MessageSink& sink) const = 0;

  // A delivery's payload (a chat line with its LF): a chat line to the sink, or own_line
  // when its sender id is the receiving client's.
  void deliver(Connection& connection, std::string_view payload, std::int64_t now_ns, MessageSink& sink) const;

 private:
  // Hands every whole frame at the front of bytes to on_frame; the bytes they took, or
  // garbled (then the sink has been told).
  std::size_t take_frames(Connection& connection, std::string_view bytes, std::int64_t now_ns, MessageSink& sink) const;

  const char* protocol_;
  std::uint32_t client_offset_;
};

// Helpers of the brokers' encoders and decoders.
// Appends number in decimal.
void append_decimal(std::string& out, std::uint64_t number);
// A room's name (room_name), without allocating: for the send path.
class RoomName {
 public:
  explicit RoomName(std::uint32_t room) : size_(std::to_chars(text_ + 1, text_ + sizeof text_, room).ptr - text_) {}
  std::string_view view() const { return {text_, size_}; }

 private:
  char text_[16] = {'r'};
  std::size_t size_;
};
// The whole of text as a decimal number, or -1 if it is not one.
std::int64_t parse_decimal(std::string_view text);

}  // namespace loadgen
