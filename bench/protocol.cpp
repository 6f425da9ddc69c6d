// Group "protocol": the protocol module's own costs, without I/O or concurrency: what
// every variant pays per byte, per line and per delivery whatever its model.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench.hpp"
#include "chat/command.hpp"
#include "chat/hub.hpp"
#include "chat/line_decoder.hpp"
#include "chat/message.hpp"
#include "chat/outbox.hpp"

namespace microbench {
namespace {

constexpr std::size_t max_line = 4096;       // the servers' default --max-line
constexpr std::size_t max_pending = 1 << 20;  // the servers' default --max-pending
// Outboxes are drained after this many messages, as a writer that gathers up to 64 lines
// into one writev would; releasing the references is part of a delivery's cost.
constexpr int drain_every = 64;

// range(0): bytes per line including the LF; range(1): bytes per read, the chunks the
// decoder is fed (lines straddling two chunks are copied once).
void decode_lines(benchmark::State& state) {
  const auto line_bytes = static_cast<std::size_t>(state.range(0));
  const auto chunk_bytes = static_cast<std::size_t>(state.range(1));
  const std::size_t lines_per_buffer = (1 << 20) / line_bytes;
  std::string buffer;
  for (std::size_t i = 0; i < lines_per_buffer; ++i) {
    buffer.append(line_bytes - 1, static_cast<char>('a' + i % 26)).push_back('\n');
  }
  chat::LineDecoder decoder(max_line);
  std::size_t lines = 0;
  for (auto _ : state) {
    for (std::size_t offset = 0; offset < buffer.size(); offset += chunk_bytes) {
      const std::string_view chunk = std::string_view(buffer).substr(offset, chunk_bytes);
      decoder.feed(chunk, [&lines](std::string_view line) {
        benchmark::DoNotOptimize(line.data());
        ++lines;
        return true;
      });
    }
  }
  if (lines != lines_per_buffer * state.iterations()) {
    state.SkipWithError("the decoder lost or invented lines");
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(buffer.size() * state.iterations()));
  state.SetItemsProcessed(static_cast<std::int64_t>(lines_per_buffer * state.iterations()));
}

void parse_command(benchmark::State& state, std::string line, chat::CommandKind expected) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(line);
    const chat::Command command = chat::parse_command(line);
    benchmark::DoNotOptimize(command);
  }
  if (chat::parse_command(line).kind != expected) state.SkipWithError("wrong command kind");
  state.SetItemsProcessed(state.iterations());
}

// 63 bytes of content: a line of about the size the load generator sends.
const std::string chat_line(63, 'x');

// One message made and queued in each of range(0) outboxes, by hand.
void outbox_fanout(benchmark::State& state) {
  const auto receivers = static_cast<std::size_t>(state.range(0));
  std::vector<chat::Outbox> outboxes(receivers, chat::Outbox(max_pending));
  int queued = 0;
  for (auto _ : state) {
    const chat::Message message = chat::make_message(chat_line);
    for (auto& outbox : outboxes) {
      if (!outbox.push(message, chat::Outbox::Kind::chat)) state.SkipWithError("outbox full");
    }
    if (++queued == drain_every) {
      for (auto& outbox : outboxes) outbox.consume(outbox.pending_bytes());
      queued = 0;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(receivers * state.iterations()));
  state.counters["receivers"] = static_cast<double>(receivers);
}

struct Session : chat::Participant {
  chat::Outbox outbox{max_pending};
};

// The same through Hub::handle, the path a server takes: parse, make the message, walk
// the room, deliver to range(0) others in the lobby.
void hub_fanout(benchmark::State& state) {
  const auto receivers = static_cast<std::size_t>(state.range(0));
  chat::Hub<Session> hub("microbench");
  std::vector<std::unique_ptr<Session>> sessions;
  for (std::size_t i = 0; i <= receivers; ++i) {
    sessions.push_back(std::make_unique<Session>());
    hub.enter(*sessions.back());
  }
  Session& sender = *sessions.front();
  bool full = false;
  int queued = 0;
  for (auto _ : state) {
    hub.handle(sender, chat_line, [&full](Session& receiver, const chat::Message& message) {
      if (!receiver.outbox.push(message, chat::Outbox::Kind::chat)) full = true;
    });
    if (++queued == drain_every) {
      for (auto& session : sessions) session->outbox.consume(session->outbox.pending_bytes());
      queued = 0;
    }
  }
  if (full) state.SkipWithError("outbox full");
  std::size_t delivered = 0;
  for (auto& session : sessions) delivered += session->outbox.pending_bytes();
  if (delivered != receivers * (chat_line.size() + 1) * queued) {
    state.SkipWithError("a receiver missed a message");
  }
  for (auto& session : sessions) hub.exit(*session);
  state.SetItemsProcessed(static_cast<std::int64_t>(receivers * state.iterations()));
  state.counters["receivers"] = static_cast<double>(receivers);
}

}  // namespace

void register_protocol_benchmarks(const Sizes& sizes) {
  benchmark::RegisterBenchmark("protocol/decode_lines", decode_lines)
      ->ArgNames({"line_bytes", "chunk_bytes"})
      ->ArgsProduct({{32, 512}, {4096, 65536}});
  const std::pair<const char*, std::pair<std::string, chat::CommandKind>> commands[] = {
      {"chat", {chat_line, chat::CommandKind::chat}},
      {"slash_chat", {"//" + chat_line, chat::CommandKind::chat}},
      {"join", {"/join room-42", chat::CommandKind::join}},
      {"stats", {"/stats", chat::CommandKind::stats}},
      {"unknown", {"/frobnicate now", chat::CommandKind::unknown}},
  };
  for (const auto& [name, command] : commands) {
    benchmark::RegisterBenchmark((std::string("protocol/parse_command/") + name).c_str(),
                                 parse_command, command.first, command.second);
  }
  for (auto* benchmark : {benchmark::RegisterBenchmark("protocol/outbox_fanout", outbox_fanout),
                          benchmark::RegisterBenchmark("protocol/hub_fanout", hub_fanout)}) {
    benchmark->ArgName("receivers");
    for (const int receivers : sizes.fanout) benchmark->Arg(receivers);
  }
}

}  // namespace microbench
