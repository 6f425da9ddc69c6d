// Redis pub/sub over RESP3 (docs/loadgen.md, "Protocols"): one channel per room. In RESP2 a
// subscribed connection may not PUBLISH; after HELLO 3 one connection does both, its
// deliveries arriving as push frames (>3 message CHANNEL PAYLOAD) and each PUBLISH answered
// with the number of subscribers it reached (:K). Redis delivers a line to its sender too:
// that copy is an own_line, dropped by the worker and counted apart.
#include "engine.hpp"
#include "wire_framed.hpp"

namespace loadgen {

namespace {

// A header line (type, length or simple value, CRLF) longer than this is not one of ours.
constexpr std::size_t max_header_line = 4096;
// Aggregates nested deeper than this are not one of ours (HELLO's reply nests two).
constexpr int max_depth = 8;

// "*N\r\n" then N bulk strings: a command as Redis takes it.
void append_command(std::string& out, std::initializer_list<std::string_view> words) {
  out.push_back('*');
  append_decimal(out, words.size());
  out.append("\r\n");
  for (const std::string_view word : words) {
    out.push_back('$');
    append_decimal(out, word.size());
    out.append("\r\n").append(word).append("\r\n");
  }
}

// The header of the RESP3 value at pos: its type, the text before CRLF, and where what follows starts.
struct Header {
  char type;
  std::string_view text;
  std::size_t next;
};

// 0: bytes end within the header; garbled: no header there.
constexpr std::size_t incomplete = 0;

class RedisWire final : public FramedWire {
 public:
  explicit RedisWire(std::uint32_t client_offset) : FramedWire("RESP3", client_offset) {}

  void hello(std::string& out, std::uint32_t) const override {
    out.clear();
    append_command(out, {"HELLO", "3"});
  }

  void join(std::string& out, std::uint32_t room) const override {
    out.clear();
    append_command(out, {"SUBSCRIBE", room_name(room)});
  }

  std::string_view publish(std::string& scratch, std::uint32_t room, std::string_view line) const override {
    scratch.clear();
    append_command(scratch, {"PUBLISH", RoomName(room).view(), line});
    return scratch;
  }

 protected:
  std::size_t frame_size(std::string_view bytes) const override { return value_end(bytes, 0, 0); }

  void on_frame(Connection& connection, std::string_view frame, std::int64_t now, MessageSink& sink) const override {
    const Header top = header(frame, 0);
    if (top.type == '>') {  // a push: its kind, then what it carries
      const auto [kind, after_kind] = string_at(frame, top.next);
      if (kind == "message") {
        const std::size_t after_channel = string_at(frame, after_kind).second;
        deliver(connection, string_at(frame, after_channel).first, now, sink);
      } else {
        sink.on_message(connection, Message{kind == "subscribe" ? Reply::joined : Reply::other, kind}, now);
      }
    } else if (top.type == '-') {
      const bool full = top.text.starts_with("ERR max number of clients");
      sink.on_message(connection, Message{full ? Reply::server_full : Reply::error, top.text}, now);
    } else {
      // PUBLISH's count of subscribers reached (":K"), HELLO's map, anything else
      sink.on_message(connection, Message{Reply::other, top.text}, now);
    }
  }

 private:
  // The header at pos; type 0 when bytes end within it, '?' when it is no RESP3 header.
  static Header header(std::string_view bytes, std::size_t pos) {
    const auto eol = bytes.find('\n', pos);
    if (eol == std::string_view::npos) return {bytes.size() - pos > max_header_line ? '?' : '\0', {}, 0};
    if (eol < pos + 2 || bytes[eol - 1] != '\r') return {'?', {}, 0};
    return {bytes[pos], bytes.substr(pos + 1, eol - 1 - (pos + 1)), eol + 1};
  }

  // Where the value at pos ends, which may be past the bytes held when it ends with a bulk
  // string; incomplete while that cannot be told yet; garbled if it is no RESP3 value.
  static std::size_t value_end(std::string_view bytes, std::size_t pos, int depth) {
    if (depth > max_depth) return garbled;
    if (pos >= bytes.size()) return incomplete;
    const Header h = header(bytes, pos);
    if (h.type == '\0') return incomplete;
    const bool null = h.text.starts_with('-');  // RESP2's $-1 and *-1
    switch (h.type) {
      case '+':
      case '-':
      case ':':
      case '_':
      case ',':
      case '#':
      case '(':
        return h.next;
      case '$':
      case '=':
      case '!': {  // bulk: LENGTH, then that many bytes and CRLF
        const std::int64_t length = parse_decimal(h.text);
        if (null) return h.next;
        return length < 0 ? garbled : h.next + static_cast<std::size_t>(length) + 2;
      }
      case '*':
      case '~':
      case '>':
      case '%':
      case '|': {  // aggregates: COUNT values (maps: pairs)
        const std::int64_t count = parse_decimal(h.text);
        if (null) return h.next;
        if (count < 0) return garbled;
        const std::uint64_t values = static_cast<std::uint64_t>(count) * (h.type == '%' || h.type == '|' ? 2 : 1);
        std::size_t end = h.next;
        for (std::uint64_t i = 0; i < values; ++i) {
          if (end > bytes.size()) return incomplete;  // a value before the last ends beyond the bytes held
          end = value_end(bytes, end, depth + 1);
          if (end == garbled || end == incomplete) return end;
        }
        return end;
      }
      default:
        return garbled;
    }
  }

  // The string at pos (bulk or simple) in a whole frame, and where the next value starts.
  static std::pair<std::string_view, std::size_t> string_at(std::string_view frame, std::size_t pos) {
    if (pos >= frame.size()) return {{}, frame.size()};
    const Header h = header(frame, pos);
    if (h.type == '+') return {h.text, h.next};
    const std::int64_t length = h.type == '$' ? parse_decimal(h.text) : -1;
    if (length < 0 || h.next + static_cast<std::size_t>(length) + 2 > frame.size()) return {{}, frame.size()};
    return {frame.substr(h.next, static_cast<std::size_t>(length)), h.next + static_cast<std::size_t>(length) + 2};
  }
};

}  // namespace

std::unique_ptr<Wire> make_redis_wire(std::uint32_t client_offset) {
  return std::make_unique<RedisWire>(client_offset);
}

}  // namespace loadgen
