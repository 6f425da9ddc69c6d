// make_wire, and the framing the brokers' wires share (wire_framed.hpp).
#include "wire.hpp"

#include <algorithm>
#include <charconv>

#include "engine.hpp"
#include "wire_framed.hpp"

namespace loadgen {

namespace {

// A frame larger than this is not one of ours: loadgen's payloads are at most 1 MiB (--size).
constexpr std::size_t max_frame_bytes = (1 << 20) + 4096;
// While a split frame's first bytes do not tell its size, partial grows by this much at a
// time: more than any header of ours, so one piece usually tells it.
constexpr std::size_t header_piece = 64;

}  // namespace

std::unique_ptr<Wire> make_wire(Protocol protocol, std::uint32_t client_offset) {
  switch (protocol) {
    case Protocol::nats:
      return make_nats_wire(client_offset);
    case Protocol::redis:
      return make_redis_wire(client_offset);
    case Protocol::mqtt:
      return make_mqtt_wire(client_offset);
    case Protocol::chat:
      break;
  }
  return make_chat_wire();
}

const char* protocol_name(Protocol protocol) {
  switch (protocol) {
    case Protocol::nats:
      return "nats";
    case Protocol::redis:
      return "redis";
    case Protocol::mqtt:
      return "mqtt";
    case Protocol::chat:
      break;
  }
  return "chat";
}

std::string room_name(std::uint32_t room) { return std::string(RoomName(room).view()); }

void FramedWire::decode(Connection& connection, std::string_view data, std::int64_t now, MessageSink& sink) const {
  std::string& partial = connection.partial;
  while (!data.empty() && connection.state == ConnectionState::open) {
    if (partial.empty()) {
      const std::size_t used = take_frames(connection, data, now, sink);
      if (used == garbled) return;
      partial.assign(data.substr(used));  // the start of the next frame, if any
      return;
    }
    // Complete the frame partial starts: the bytes its size says it lacks, or, while its
    // first bytes do not tell its size yet, a piece (which may reach into the next frame).
    const std::size_t size = frame_size(partial);
    const std::size_t take = std::min(data.size(), size != 0 && size != garbled ? size - partial.size() : header_piece);
    partial.append(data.substr(0, take));
    data.remove_prefix(take);
    const std::size_t used = take_frames(connection, partial, now, sink);
    if (used == garbled) return;
    partial.erase(0, used);
  }
}

std::size_t FramedWire::take_frames(Connection& connection, std::string_view bytes, std::int64_t now,
                                    MessageSink& sink) const {
  std::size_t used = 0;
  while (used < bytes.size() && connection.state == ConnectionState::open) {
    const std::string_view rest = bytes.substr(used);
    const std::size_t size = frame_size(rest);
    if (size == garbled || size > max_frame_bytes) {
      connection.partial.clear();
      sink.garbled(connection, std::string("bytes from the server that are no ") + protocol_ + " frame" +
                                   (size == garbled ? "" : " (a frame of " + std::to_string(size) + " bytes)"));
      return garbled;
    }
    if (size == 0 || size > rest.size()) break;
    on_frame(connection, rest.substr(0, size), now, sink);
    used += size;
  }
  return used;
}

void FramedWire::deliver(Connection& connection, std::string_view payload, std::int64_t now, MessageSink& sink) const {
  if (payload.ends_with('\n')) payload.remove_suffix(1);
  std::uint32_t sender = 0;
  const char* end = payload.data() + payload.size();
  const auto [after, error] = std::from_chars(payload.data(), end, sender);
  const bool own = error == std::errc() && after != end && *after == ' ' && sender == client_offset_ + connection.id;
  sink.on_message(connection, Message{own ? Reply::own_line : Reply::none, payload}, now);
}

void append_decimal(std::string& out, std::uint64_t number) {
  char digits[24];
  out.append(digits, std::to_chars(digits, digits + sizeof digits, number).ptr);
}

std::int64_t parse_decimal(std::string_view text) {
  std::int64_t number = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  return error == std::errc() && end == text.data() + text.size() && !text.empty() && number >= 0 ? number : -1;
}

}  // namespace loadgen
