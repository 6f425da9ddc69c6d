// libFuzzer target for the protocol module's non-I/O path: LineDecoder, parse_command,
// is_valid_room_name, and Hub::handle with Outbox, driven by fake sessions.
//
// It checks properties, not only the absence of crashes (a failed check aborts):
//  - the decoder hands out the same lines, and ends in the same state, whatever the
//    chunking, and those are the lines a plain reading of protocol §Lines gives;
//  - no line exceeds max_line or holds an LF; buffered_bytes() <= max_line + 1 always;
//  - a chat line reaches exactly the other members of the sender's room, and each
//    receiver gets, byte for byte, the lines and replies queued for it, in order;
//  - the counters agree with what happened (lines_in, lines_out, clients, rooms).
//
// Input layout: a few parameters taken from the end (FuzzedDataProvider), the rest is
// the byte stream the clients send.

#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "chat/command.hpp"
#include "chat/hub.hpp"
#include "chat/line_decoder.hpp"
#include "chat/outbox.hpp"

namespace {

// A failed property must stop the fuzzer with a reproducer, in every build type.
#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

using Status = chat::LineDecoder::Status;

struct Decoded {
  std::vector<std::string> lines;
  Status status = Status::ok;
};

// "/quit", with or without an argument (protocol §Commands): the session reads no more.
bool is_quit(std::string_view line) { return line == "/quit" || line.starts_with("/quit "); }

// protocol §Lines read plainly, independent of LineDecoder: split at LF, drop one CR
// before it, fail on content over max_line; an unfinished tail fails once it cannot fit
// any more. Stops after "/quit", as a session does.
Decoded reference_decode(std::string_view stream, std::size_t max_line) {
  Decoded out;
  while (true) {
    const auto lf = stream.find('\n');
    if (lf == std::string_view::npos) {
      const bool fits = stream.size() <= max_line ||
                        (stream.size() == max_line + 1 && stream.back() == '\r');
      if (!fits) out.status = Status::line_too_long;
      return out;
    }
    std::string_view line = stream.substr(0, lf);
    stream.remove_prefix(lf + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.size() > max_line) {
      out.status = Status::line_too_long;
      return out;
    }
    out.lines.emplace_back(line);
    if (is_quit(line)) {
      out.status = Status::stopped;
      return out;
    }
  }
}

// Feeds `stream` in chunks whose sizes `next_size` picks; checks the per-call invariants.
template <class NextSize>
Decoded decode_in_chunks(std::string_view stream, std::size_t max_line, NextSize&& next_size) {
  chat::LineDecoder decoder(max_line);
  Decoded out;
  while (!stream.empty() && out.status == Status::ok) {
    const std::size_t n = std::min(stream.size(), next_size());
    out.status = decoder.feed(stream.substr(0, n), [&](std::string_view line) {
      FUZZ_CHECK(line.size() <= max_line);
      FUZZ_CHECK(line.find('\n') == std::string_view::npos);
      out.lines.emplace_back(line);
      return !is_quit(line);
    });
    FUZZ_CHECK(decoder.buffered_bytes() <= max_line + 1);
    stream.remove_prefix(n);
  }
  if (out.status == Status::line_too_long) {
    // Sticky: a connection that overflowed stays failed.
    FUZZ_CHECK(decoder.feed("x\n", [](std::string_view) { return true; }) == Status::line_too_long);
  }
  return out;
}

void check_decoder(std::string_view stream, std::size_t max_line, std::uint32_t seed) {
  const Decoded expected = reference_decode(stream, max_line);
  const auto same = [&](const Decoded& d) {
    FUZZ_CHECK(d.lines == expected.lines);
    FUZZ_CHECK(d.status == expected.status);
  };
  same(decode_in_chunks(stream, max_line, [&] { return stream.size() + 1; }));  // whole
  same(decode_in_chunks(stream, max_line, [] { return std::size_t{1}; }));      // bytewise
  std::minstd_rand rng(seed);
  same(decode_in_chunks(stream, max_line, [&] { return std::size_t{1} + rng() % 64; }));
}

// The reply a command line must get (protocol §Commands), written apart from Hub.
std::string expected_reply(std::string_view line, std::string_view room_arg_if_valid) {
  const auto word = line.substr(0, line.find(' '));
  if (word == "/join") {
    return room_arg_if_valid.empty() ? "/error bad-room\n"
                                     : "/joined " + std::string(room_arg_if_valid) + "\n";
  }
  return "/error unknown-command\n";
}

struct FakeSession : chat::Participant {
  FakeSession(int id, std::size_t max_line, std::size_t max_pending)
      : id(id), decoder(max_line), outbox(max_pending) {}
  int id;
  chat::LineDecoder decoder;
  chat::Outbox outbox;
  bool alive = true;
  bool slow = false;         // disconnected for --max-pending: expected is an upper bound
  std::string model_room = "lobby";  // where the fuzzer believes it is
  std::string sent;          // bytes dealt to it while alive
  std::vector<std::string> handled;  // lines it passed to the hub
  std::string expected;      // bytes it must receive, in order
  std::string received;      // bytes drained from its outbox
  std::uint64_t chat_lines_owed = 0;
  std::uint64_t chat_lines_out = 0;
};

// Writes up to `budget` of what `s` owes, the way a variant's writev would.
void drain(FakeSession& s, std::size_t budget) {
  std::array<std::string_view, 4> views;
  const std::size_t filled = s.outbox.gather(views);
  std::size_t n = 0;
  for (std::size_t i = 0; i < filled && n < budget; ++i) {
    const auto part = views[i].substr(0, budget - n);
    s.received.append(part);
    n += part.size();
  }
  s.chat_lines_out += s.outbox.consume(n);
}

struct HubParams {
  int sessions;             // 1-4 clients
  std::size_t max_pending;  // small, so that slow receivers happen
  std::uint32_t seed;       // chunking, dealing and draining
};

void check_hub(std::string_view stream, std::size_t max_line, HubParams params) {
  const int count = params.sessions;
  const std::size_t max_pending = params.max_pending;
  std::minstd_rand rng(params.seed);

  chat::Hub<FakeSession> hub("fuzz");
  std::vector<std::unique_ptr<FakeSession>> sessions;
  for (int i = 0; i < count; ++i) {
    sessions.push_back(std::make_unique<FakeSession>(i, max_line, max_pending));
    hub.enter(*sessions.back());
  }
  std::uint64_t chat_lines = 0;

  const auto leave = [&](FakeSession& s) {
    hub.exit(s);
    s.alive = false;
  };

  // One decoded line from `s`, as every variant handles it.
  const auto on_line = [&](FakeSession& s, std::string_view line) {
    s.handled.emplace_back(line);
    std::set<int> reached;
    const auto outcome = hub.handle(s, line, [&](FakeSession& to, const chat::Message& m) {
      FUZZ_CHECK(*m == std::string(line) + "\n");
      FUZZ_CHECK(reached.insert(to.id).second);
      if (to.outbox.push(m, chat::Outbox::Kind::chat)) {
        to.expected += std::string(line) + "\n";
        ++to.chat_lines_owed;
      } else {
        to.slow = true;  // closed after the fan-out, as variants do
      }
    });
    const auto command = chat::parse_command(line);
    if (command.kind == chat::CommandKind::chat) {
      ++chat_lines;
      std::set<int> members;
      for (const auto& o : sessions) {
        if (o->alive && o.get() != &s && o->model_room == s.model_room) members.insert(o->id);
      }
      FUZZ_CHECK(reached == members);
      FUZZ_CHECK(!outcome.reply && !outcome.quit);
    } else {
      FUZZ_CHECK(reached.empty());
    }
    if (command.kind == chat::CommandKind::quit) {
      FUZZ_CHECK(outcome.quit && !outcome.reply);
    } else if (command.kind == chat::CommandKind::stats) {
      FUZZ_CHECK(outcome.reply && outcome.reply->starts_with("/stats variant=fuzz clients="));
    } else if (command.kind != chat::CommandKind::chat) {
      const bool valid = chat::is_valid_room_name(command.argument);
      FUZZ_CHECK(outcome.reply);
      FUZZ_CHECK(*outcome.reply == expected_reply(line, valid ? command.argument : ""));
      if (command.kind == chat::CommandKind::join && valid) s.model_room = command.argument;
    }
    if (outcome.reply) {
      if (s.outbox.push(outcome.reply, chat::Outbox::Kind::reply)) s.expected += *outcome.reply;
      else s.slow = true;
    }
    for (auto& o : sessions) {
      if (o->slow && o->alive) {
        leave(*o);
        o->outbox.clear();
      }
    }
    if (outcome.quit) leave(s);
    return s.alive;
  };

  // Deal the stream out in random chunks to random sessions, writing now and then.
  while (!stream.empty()) {
    const std::size_t n = std::min(stream.size(), std::size_t{1} + rng() % 32);
    FakeSession& s = *sessions[rng() % sessions.size()];
    if (s.alive) {
      s.sent.append(stream.substr(0, n));
      const auto status =
          s.decoder.feed(stream.substr(0, n), [&](std::string_view line) { return on_line(s, line); });
      if (status == Status::line_too_long && s.alive) {
        if (s.outbox.push(chat::replies::line_too_long(), chat::Outbox::Kind::reply)) {
          s.expected += "/error line-too-long\n";
        }
        leave(s);
      }
    }
    stream.remove_prefix(n);
    drain(*sessions[rng() % sessions.size()], rng() % 64);

    // The counters agree with the fuzzer's own account.
    std::set<std::string> rooms;
    std::uint64_t alive = 0;
    for (const auto& o : sessions) {
      if (!o->alive) continue;
      rooms.insert(o->model_room);
      ++alive;
    }
    FUZZ_CHECK(hub.counters().clients == alive);
    FUZZ_CHECK(hub.counters().lines_in == chat_lines);
    FUZZ_CHECK(hub.stats().find(" clients=" + std::to_string(alive) + " rooms=" +
                                std::to_string(rooms.size()) + " ") != std::string::npos);
  }

  for (auto& s : sessions) {
    while (!s->outbox.empty()) drain(*s, 1 + rng() % 64);
    if (s->slow) {
      FUZZ_CHECK(s->expected.starts_with(s->received));
    } else {
      FUZZ_CHECK(s->received == s->expected);
      FUZZ_CHECK(s->chat_lines_out == s->chat_lines_owed);
    }
    // What a session handled is what the plain reading of its bytes gives (a session
    // closed for slowness stopped early: a prefix).
    const Decoded ref = reference_decode(s->sent, max_line);
    if (s->slow) {
      FUZZ_CHECK(s->handled.size() <= ref.lines.size());
      FUZZ_CHECK(std::equal(s->handled.begin(), s->handled.end(), ref.lines.begin()));
    } else {
      FUZZ_CHECK(s->handled == ref.lines);
    }
    if (s->alive) hub.exit(*s);
  }
  FUZZ_CHECK(hub.counters().clients == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider params(data, size);
  // Parameters come from the input's end; small limits so that they are hit often.
  const std::size_t max_line = params.ConsumeIntegralInRange<std::size_t>(1, 100);
  const std::uint32_t seed = params.ConsumeIntegral<std::uint32_t>();
  HubParams hub;
  hub.sessions = params.ConsumeIntegralInRange(1, 4);
  hub.max_pending = params.ConsumeIntegralInRange<std::size_t>(1, 512);
  hub.seed = params.ConsumeIntegral<std::uint32_t>();
  const std::string stream = params.ConsumeRemainingBytesAsString();

  check_decoder(stream, max_line, seed);
  check_hub(stream, max_line, hub);
  return 0;
}
