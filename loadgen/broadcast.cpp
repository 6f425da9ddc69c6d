// broadcast mode (SPEC §3): one sender, every other client a receiver; per-line
// latency and the completion time of each message. As a slice of a run over many hosts
// (docs/distributed.md), the sender is global client 0, in the slice at offset 0, and the
// sync and the broadcasts start at times laid out from --start-at.
#include <algorithm>
#include <cmath>
#include <map>

#include "scenario_common.hpp"

namespace loadgen {

namespace json = boost::json;

namespace {

// With --start-at: the sync phase runs for this long from T, then the broadcasts start.
// Every client has connected before T, so the server has registered it; a second of sync
// lines every 50 ms reaches each one many times over.
constexpr std::int64_t sliced_sync_ns = 1'000'000'000;
constexpr auto sync_interval = std::chrono::milliseconds(50);

// One phase's start as a slice saw it: when it was due (UNIX ms, reference clock) and how
// late this process was ready for it (> 0: late). Warns when late by more than 1 ms.
json::object phase_start_json(json::object& report, const char* name, std::int64_t due_unix_ms,
                              std::int64_t due_steady_ns) {
  const std::int64_t late_ns = to_ns(Clock::now()) - due_steady_ns;
  if (late_ns > 1'000'000)
    warn(report, "ready " + std::to_string(late_ns / 1'000'000) + " ms after the start of the " + name +
                     " phase (--start-at): receivers of other processes may have missed the sender's lines");
  return {{"phase", name},
          {"start_at_unix_ms", due_unix_ms},
          {"start_late_ms", std::round(static_cast<double>(late_ns) / 1e5) / 10}};
}

// What a worker's line handler counts of the messages, beside its WorkerTraffic.
struct MessageTally {
  std::uint64_t sync_lines = 0;              // sync lines received (the server counts them out)
  std::vector<std::uint32_t> receivers;      // per message, receivers that had it
  std::vector<std::int64_t> max_latency_ns;  // per message, its slowest timed receiver (INT64_MIN: none)
};

// A broadcast receiver's line: the sender's sync line (it has joined), or a message.
void on_line(WorkerTraffic& traffic, MessageTally& tally, Connection& connection, std::string_view line,
             std::int64_t now, const Phase& phase) {
  if (reply_kind(line) != Reply::none) return;  // no command is sent; an /error is the engine's
  if (line == sync_line) {
    ++tally.sync_lines;
    mark_joined(traffic, connection);
    return;
  }
  const auto delivery = count_chat_line(traffic, connection, line, now, phase);
  if (!delivery || delivery->seq >= tally.receivers.size()) return;
  ++tally.receivers[delivery->seq];
  if (delivery->latency_ns)
    tally.max_latency_ns[delivery->seq] = std::max(tally.max_latency_ns[delivery->seq], *delivery->latency_ns);
}

// This process's receivers, counted on each worker and added up.
struct BroadcastCounts {
  LatencyRecorder latency;
  LossTotals loss;
  std::uint64_t receivers = 0, receivers_disconnected = 0, unknown = 0, late = 0, late_stalled = 0;
  std::uint64_t sync_received = 0, untimed = 0, cross_samples = 0;
  std::int64_t cross_min_ns = INT64_MAX;
  std::vector<std::uint32_t> message_receivers;           // per message, the receivers that had it
  std::vector<std::int64_t> max_latency;                  // per message, its slowest timed receiver (INT64_MIN: none)
  std::map<std::uint32_t, json::object> receiver_detail;  // by id, so the document does not depend on the threads

  BroadcastCounts& operator+=(BroadcastCounts&& other) {
    latency.merge(other.latency);
    loss += other.loss;
    receivers += other.receivers;
    receivers_disconnected += other.receivers_disconnected;
    unknown += other.unknown;
    late += other.late;
    late_stalled += other.late_stalled;
    sync_received += other.sync_received;
    untimed += other.untimed;
    cross_samples += other.cross_samples;
    cross_min_ns = std::min(cross_min_ns, other.cross_min_ns);
    for (std::size_t m = 0; m < message_receivers.size(); ++m) {
      message_receivers[m] += other.message_receivers[m];
      max_latency[m] = std::max(max_latency[m], other.max_latency[m]);
    }
    receiver_detail.merge(other.receiver_detail);  // each id is one worker's
    return *this;
  }
};

// One worker's receivers (every joined client but the sender) against the sends_done lines sent.
BroadcastCounts count_worker(const Options& options, Worker& worker, const WorkerTraffic& traffic,
                             const MessageTally& tally, std::uint64_t sends_done) {
  BroadcastCounts counts;
  counts.latency = traffic.latency;
  counts.unknown = traffic.unknown_lines;
  counts.late = traffic.late_sends;
  counts.late_stalled = traffic.late_sends_stalled;
  counts.sync_received = tally.sync_lines;
  counts.untimed = traffic.cross_slice_deliveries;
  counts.cross_samples = traffic.cross_slice_samples;
  counts.cross_min_ns = traffic.cross_slice_min_ns;
  counts.message_receivers = tally.receivers;
  counts.max_latency = tally.max_latency_ns;
  for (auto& connection : worker.connections()) {
    if (global_id(options, *connection) == 0 || !connection->joined) continue;
    ++counts.receivers;
    const SenderTrack& track = connection->tracks[0];
    counts.loss.received += track.received;
    counts.loss.duplicated += track.duplicated;
    counts.loss.reordered += track.reordered;
    counts.loss.add_receiver(track.missing(sends_done, connection->state != ConnectionState::closed));
    if (connection->state == ConnectionState::closed) ++counts.receivers_disconnected;
    counts.receiver_detail[global_id(options, *connection)] = receiver_loss_json(options, *connection);
  }
  return counts;
}

}  // namespace

void run_broadcast(Engine& engine, json::object& report, Progress& progress) {
  const Options& options = engine.options();
  std::vector<MemorySample> steps;
  sample_step(engine, steps, report);
  ramp_all(engine, report, progress);
  sample_step(engine, steps, report);

  const unsigned messages = options.messages;
  std::vector<MessageTally> tallies(engine.workers().size());  // before traffic, whose handlers use it
  Traffic traffic(engine);
  Phase& phase = traffic.phase;
  const double ahead_ms = set_line_clock(phase, options);  // this UNIX clock less the reference clock
  engine.for_each_worker([&](Worker& worker) {
    MessageTally& tally = tallies[worker.index()];
    tally.receivers.assign(messages, 0);
    tally.max_latency_ns.assign(messages, INT64_MIN);
    for (auto& connection : worker.connections())
      connection->tracks.assign(global_id(options, *connection) == 0 ? 0 : 1, SenderTrack{});
    worker.set_line_handler(
        [&traffic = traffic.of(worker), &tally, &phase](Connection& c, std::string_view line, std::int64_t now) {
          on_line(traffic, tally, c, line, now, phase);
        });
  });
  report["ready_at_unix_ms"] = unix_ms_now(ahead_ms);

  // The sender is global client 0: this process's client 0 if its slice starts at 0.
  const bool has_sender = options.client_offset == 0;
  Worker& sender_worker = engine.worker_of(0);
  Connection* sender = nullptr;
  if (has_sender)
    sender_worker.call([&] {
      sender = sender_worker.find(0);
      if (sender && sender->state != ConnectionState::open) sender = nullptr;
      if (sender) sender->joined = true;  // the sender never hears itself
    });
  auto receivers_joined = [&] {
    return traffic.sum(&WorkerTraffic::joined);
  };  // the sender's flag is set by hand, uncounted
  std::uint64_t sync_sent = 0;
  auto send_sync = [&] {
    sender_worker.post([&] { sender_worker.send(*sender, sync_message); });
    ++sync_sent;
  };

  // Sync: the server may register a connection some time after connect() returned; a
  // receiver takes part once it has heard the sender, so no message goes to a receiver
  // that was never in the room. Uses chat lines only, as the seed's server knows no commands.
  std::int64_t start_ns = 0;
  json::array phases;
  if (sliced(options)) {
    // No process knows when the others are ready: the sync runs from T for a fixed time,
    // the broadcasts start after it, and each slice says how late it was for each.
    const std::int64_t sync_ns = steady_ns_at_unix_ms(options.start_at_ms, ahead_ms);
    start_ns = sync_ns + sliced_sync_ns;
    phases.push_back(phase_start_json(report, "sync", options.start_at_ms, sync_ns));
    if (has_sender && !sender) warn(report, "client 0 (the sender) is not connected; nothing to measure");
    wait_until(
        from_ns(sync_ns), [] { return false; }, [&] { progress.show("waiting for --start-at"); });
    auto last_sync = Clock::time_point{};
    // The last sync line leaves 100 ms before the broadcasts, so it is not taken for one.
    wait_until(
        from_ns(start_ns - 100'000'000), [] { return false; },
        [&] {
          if (!sender || Clock::now() - last_sync < sync_interval) return;
          last_sync = Clock::now();
          send_sync();
          progress.show("sync: " + std::to_string(receivers_joined()) + " receivers here");
        });
    phases.push_back(phase_start_json(report, "broadcast", options.start_at_ms + sliced_sync_ns / 1'000'000, start_ns));
    wait_until(
        from_ns(start_ns), [] { return false; }, nullptr);
    const std::uint64_t heard = receivers_joined(), here = engine.open_connections() - (sender ? 1 : 0);
    if (heard < here)
      warn(report, std::to_string(here - heard) +
                       " receivers here never heard the sender's sync before the broadcasts; left out");
  } else if (!sender) {
    warn(report, "client 0 (the sender) is not connected; nothing to measure");
  } else {
    const auto sync_deadline = Clock::now() + seconds(options.connect_timeout_s);
    auto last_sync = Clock::time_point{};
    wait_until(
        sync_deadline, [&] { return receivers_joined() + 1 >= engine.open_connections(); },
        [&] {
          if (Clock::now() - last_sync < sync_interval) return;
          last_sync = Clock::now();
          send_sync();
          progress.show("sync: " + std::to_string(receivers_joined()) + "/" +
                        std::to_string(engine.open_connections() - 1) + " receivers");
        });
    // Lines relayed before the phase starts are drained with a short pause.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (receivers_joined() + 1 < engine.open_connections())
      warn(report, std::to_string(engine.open_connections() - 1 - receivers_joined()) +
                       " receivers never heard the sender before the deadline; left out");
    start_ns = to_ns(Clock::now() + std::chrono::milliseconds(20));
  }
  const std::uint64_t receivers_at_start = receivers_joined();

  const double rate = 1000.0 / options.interval_ms;
  const OpenLoopSchedule schedule(start_ns, rate);
  const auto cpu_start = CpuWindow::now(options.server_pid);
  std::uint64_t sends_done = 0;
  WorkerTraffic& state = traffic.of(sender_worker);
  if (sender) {
    const SendPlan plan{start_ns, rate, messages, start_ns, 0};  // exact times: one send per interval
    sender_worker.call([&] {
      sender->sender = true;
      start_sending(sender_worker, state, phase, {Sender{sender, plan}}, options.size);
    });
    const auto send_end = from_ns(schedule.intended_ns(messages)) + std::chrono::seconds(1);
    wait_until(
        send_end, [&] { return state.lines_sent.get() >= messages || engine.open_connections() == 0; },
        [&] {
          progress.show("broadcast: " + std::to_string(state.lines_sent.get()) + "/" + std::to_string(messages) +
                        " sent");
        });
  }
  if (sliced(options)) {
    // Every slice counts at the same moment, --drain-s after the last message was due, each
    // on its own clock: no slice stops listening while lines to it may still come.
    wait_until(
        from_ns(schedule.intended_ns(messages) + static_cast<std::int64_t>(options.drain_s * 1e9)),
        [] { return false; },
        [&] { progress.show("draining: " + std::to_string(traffic.delivered()) + " delivered"); });
  } else if (sender) {
    drain(engine, traffic, state.lines_sent.get() * receivers_at_start, progress);
  }
  if (sender) {
    sender_worker.call([&] { stop_sending(sender_worker, state); });
    sends_done = state.lines_sent.get();
  }
  const auto cpu_end = CpuWindow::now(options.server_pid);
  progress.finish();

  // Count: the sender is done or gone.
  BroadcastCounts counts = engine.reduce([&](Worker& worker) {
    return count_worker(options, worker, traffic.of(worker), tallies[worker.index()], sends_done);
  });
  const LatencyRecorder& latency = counts.latency;
  const LossTotals& loss = counts.loss;
  const std::vector<std::uint32_t>& message_receivers = counts.message_receivers;
  const std::vector<std::int64_t>& max_latency = counts.max_latency;
  const std::uint64_t receivers = counts.receivers, receivers_disconnected = counts.receivers_disconnected;
  const std::uint64_t unknown = counts.unknown, late = counts.late, late_stalled = counts.late_stalled;
  const std::uint64_t sync_received = counts.sync_received, untimed = counts.untimed;
  const std::uint64_t cross_samples = counts.cross_samples;
  const std::int64_t cross_min_ns = counts.cross_min_ns;
  LatencyRecorder completion;
  // Completion over this process's receivers: a message every one of them had, timed. In a
  // slice only the merge sees every receiver; a receiver slice does not know what was sent.
  const std::uint64_t messages_known = sender ? sends_done : (sliced(options) ? messages : 0);
  std::uint64_t incomplete = 0;
  for (unsigned m = 0; m < messages_known; ++m) {
    if (receivers > 0 && message_receivers[m] == receivers && max_latency[m] != INT64_MIN)
      completion.record(max_latency[m]);
    else
      ++incomplete;
  }
  const std::uint64_t expected = sends_done * receivers;
  report["latency_us"] = latency_json(latency);
  report["latency_histogram"] = histogram_json(latency);
  json::value completion_json = nullptr;
  if (completion.count() > 0) {
    auto us = [&](double q) { return std::round(static_cast<double>(completion.percentile(q))) / 1000.0; };
    completion_json = json::object{{"p50", us(0.5)},
                                   {"p95", us(0.95)},
                                   {"p99", us(0.99)},
                                   {"max", static_cast<double>(completion.max()) / 1000.0},
                                   {"count", completion.count()},
                                   {"incomplete_messages", incomplete}};
  }
  report["broadcast_completion_us"] = completion_json;
  // A slice's expected, lost and outstanding need the sender's count, which only the slice
  // at offset 0 has: null in the others, counted by `loadgen merge` from loss_detail.
  const bool whole = !sliced(options) || has_sender;
  auto if_whole = [&](std::uint64_t value) { return whole ? json::value(value) : json::value(nullptr); };
  report["lines"] = json::object{{"sent", sends_done},
                                 {"delivered", loss.received},
                                 {"expected", if_whole(expected)},
                                 {"lost", if_whole(loss.lost)},
                                 {"outstanding", if_whole(loss.outstanding)},
                                 {"duplicated", loss.duplicated},
                                 {"reordered", loss.reordered},
                                 {"receivers", receivers},
                                 {"receivers_with_loss", if_whole(loss.receivers_with_loss)},
                                 {"receivers_with_outstanding", if_whole(loss.receivers_with_outstanding)},
                                 {"receivers_disconnected", receivers_disconnected},
                                 {"unknown", unknown},
                                 {"late_sends", late},
                                 {"late_sends_stalled", late_stalled},
                                 // The server counts every sync line it relays in lines_out too.
                                 {"sync_sent", sync_sent},
                                 {"sync_received", sync_received},
                                 {"server_lines_out", nullptr}};
  // What `loadgen merge` needs: the sender's count, each receiver's track of it, and per
  // message how many receivers here had it and the slowest of them (null: none timed).
  json::array ids, sent, receiver_array, per_message_receivers, per_message_max;
  if (sender) ids.push_back(0), sent.push_back(sends_done);
  for (auto& [id, receiver] : counts.receiver_detail) receiver_array.push_back(std::move(receiver));
  for (unsigned m = 0; m < messages; ++m) {
    per_message_receivers.push_back(message_receivers[m]);
    per_message_max.push_back(max_latency[m] == INT64_MIN ? json::value(nullptr) : json::value(max_latency[m]));
  }
  report["loss_detail"] = json::object{{"senders", json::object{{"id", std::move(ids)}, {"sent", std::move(sent)}}},
                                       {"receivers", std::move(receiver_array)}};
  report["broadcast_detail"] = json::object{{"message_receivers", std::move(per_message_receivers)},
                                            {"message_max_latency_ns", std::move(per_message_max)}};
  report["phases"] = sliced(options) ? json::value(std::move(phases)) : json::value(nullptr);
  report["clock"] = clock_json(
      options, cross_samples,
      cross_samples > 0 ? json::value(static_cast<double>(cross_min_ns) / 1e3) : json::value(nullptr), untimed);
  const double window = std::max(1e-9, std::chrono::duration<double>(cpu_end.wall - cpu_start.wall).count());
  report["throughput"] = json::object{{"sent_per_s", static_cast<double>(sends_done) / window},
                                      {"deliveries_per_s", static_cast<double>(loss.received) / window}};
  fill_cpu(report, cpu_start, cpu_end, options.server_pid);
  finish_common(engine, report);
}

}  // namespace loadgen
