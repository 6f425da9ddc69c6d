// broadcast mode (docs/loadgen.md, "What each mode does"): one sender, every other client a
// receiver; per-line latency and the completion time of each message. As a slice of a run
// over many hosts (docs/distributed.md), the sender is global client 0, in the slice at
// offset 0, and the sync and the broadcasts start at times laid out from --start-at.
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

// What a worker's message handler counts of the messages, beside its WorkerTraffic.
struct MessageTally {
  std::uint64_t sync_lines = 0;              // sync lines received (the server counts them out)
  std::vector<std::uint32_t> receivers;      // per message, receivers that had it
  std::vector<std::int64_t> max_latency_ns;  // per message, its slowest timed receiver (INT64_MIN: none)
};

// A broadcast receiver's line: the sender's sync line (it has joined), or a message.
void on_message(WorkerTraffic& traffic, MessageTally& tally, Connection& connection, const Message& message,
                std::int64_t now, const Phase& phase) {
  // No command is sent (a broker's subscription is acknowledged, but the sync line is what
  // says its lines arrive); an error is the engine's.
  if (message.kind != Reply::none) return;
  const std::string_view line = message.text;
  if (line == sync_line) {
    if (phase.own_first + connection.id == 0) return;  // the sender's own, from a broker that echoes (Redis)
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

// This process's receivers, counted on each worker and added up: the run's figures.
struct BroadcastCounts {
  WindowCounts window;  // the whole run's
  LossTotals loss;
  std::uint64_t receivers = 0, receivers_disconnected = 0, unknown = 0, untimed = 0, sync_received = 0;
  std::vector<std::uint64_t> message_receivers;           // per message, the receivers that had it
  std::vector<std::int64_t> max_latency;                  // per message, its slowest timed receiver (INT64_MIN: none)
  std::map<std::uint32_t, json::object> receiver_detail;  // by id, so the document does not depend on the threads

  BroadcastCounts& operator+=(BroadcastCounts&& other) {
    window += other.window;
    loss += other.loss;
    receivers += other.receivers;
    receivers_disconnected += other.receivers_disconnected;
    unknown += other.unknown;
    untimed += other.untimed;
    sync_received += other.sync_received;
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
  counts.window = traffic.window;
  counts.unknown = traffic.unknown_lines;
  counts.untimed = traffic.cross_slice_deliveries;
  counts.sync_received = tally.sync_lines;
  counts.message_receivers.assign(tally.receivers.begin(), tally.receivers.end());
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

// Everything the steps of one broadcast run share.
struct BroadcastRun {
  BroadcastRun(Engine& e, json::object& r, Progress& p)
      : engine(e),
        options(e.options()),
        report(r),
        progress(p),
        tallies(e.workers().size()),
        traffic(e),
        sender_worker(e.worker_of(0)) {}

  // Receivers that heard the sender; the sender's own flag is set by hand, uncounted.
  std::uint64_t receivers_joined() const { return traffic.sum(&WorkerTraffic::joined); }
  void send_sync() {
    sender_worker.post([this] {
      std::string frame;
      sender_worker.send(*sender, sender_worker.wire().publish(frame, room, sync_message));
    });
    ++sync_sent;
  }

  Engine& engine;
  const Options& options;
  json::object& report;
  Progress& progress;
  std::vector<MessageTally> tallies;  // before traffic, whose handlers use it
  Traffic traffic;
  double ahead_ms = 0;  // this UNIX clock less the reference clock
  // The sender is global client 0: this process's client 0 if its slice starts at 0.
  bool has_sender = false;
  Worker& sender_worker;
  Connection* sender = nullptr;  // null: not here, or not connected
  std::uint64_t sync_sent = 0;
  static constexpr std::uint32_t room = 0;  // everyone's: the chat protocol's lobby, a broker's r0
  json::array phases;                       // with --start-at: each phase's start as this process saw it
  std::int64_t start_ns = 0;                // the first message's intended time
  std::uint64_t sends_done = 0;
};

// Every client tracks the sender's lines and every worker tallies the messages; on a
// broker, every client (the sender too, as in a chat room) subscribes to the one room. The
// sender is found and, since it never hears itself, marked joined.
void listen(BroadcastRun& run) {
  const Options& options = run.options;
  run.ahead_ms = set_line_clock(run.traffic.phase, options);
  run.engine.for_each_worker([&](Worker& worker) {
    MessageTally& tally = run.tallies[worker.index()];
    tally.receivers.assign(options.messages, 0);
    tally.max_latency_ns.assign(options.messages, INT64_MIN);
    worker.set_message_handler([&traffic = run.traffic.of(worker), &tally, &phase = run.traffic.phase](
                                   Connection& c, const Message& message, std::int64_t now) {
      on_message(traffic, tally, c, message, now, phase);
    });
    std::string join;
    if (!worker.wire().has_lobby()) worker.wire().join(join, BroadcastRun::room);
    for (auto& connection : worker.connections()) {
      connection->tracks.assign(global_id(options, *connection) == 0 ? 0 : 1, SenderTrack{});
      if (!join.empty()) worker.send(*connection, join);
    }
  });
  run.report["ready_at_unix_ms"] = unix_ms_now(run.ahead_ms);
  run.has_sender = options.client_offset == 0;
  if (run.has_sender)
    run.sender_worker.call([&] {
      run.sender = run.sender_worker.find(0);
      if (run.sender && run.sender->state != ConnectionState::open) run.sender = nullptr;
      if (run.sender) run.sender->joined = true;
    });
}

// The sync (see sync_receivers) of a slice: no process knows when the others are ready,
// so the sync runs from T for a fixed time, the broadcasts start after it, and each slice
// says how late it was for each.
void sync_slices(BroadcastRun& run) {
  const Options& options = run.options;
  const std::int64_t sync_ns = steady_ns_at_unix_ms(options.start_at_ms, run.ahead_ms);
  run.start_ns = sync_ns + sliced_sync_ns;
  run.phases.push_back(phase_start_json(run.report, "sync", options.start_at_ms, sync_ns));
  if (run.has_sender && !run.sender) warn(run.report, "client 0 (the sender) is not connected; nothing to measure");
  wait_until(
      from_ns(sync_ns), [] { return false; }, [&] { run.progress.show("waiting for --start-at"); });
  auto last_sync = Clock::time_point{};
  // The last sync line leaves 100 ms before the broadcasts, so it is not taken for one.
  wait_until(
      from_ns(run.start_ns - 100'000'000), [] { return false; },
      [&] {
        if (!run.sender || Clock::now() - last_sync < sync_interval) return;
        last_sync = Clock::now();
        run.send_sync();
        run.progress.show("sync: " + std::to_string(run.receivers_joined()) + " receivers here");
      });
  run.phases.push_back(
      phase_start_json(run.report, "broadcast", options.start_at_ms + sliced_sync_ns / 1'000'000, run.start_ns));
  wait_until(
      from_ns(run.start_ns), [] { return false; }, nullptr);
  const std::uint64_t heard = run.receivers_joined(), here = run.engine.open_connections() - (run.sender ? 1 : 0);
  if (heard < here)
    warn(run.report, std::to_string(here - heard) +
                         " receivers here never heard the sender's sync before the broadcasts; left out");
}

// Sync: the server may register a connection some time after connect() returned; a
// receiver takes part once it has heard the sender, so no message goes to a receiver
// that was never in the room. Uses chat lines only, as the seed's server knows no commands.
void sync_receivers(BroadcastRun& run) {
  Engine& engine = run.engine;
  if (!run.sender) {
    warn(run.report, "client 0 (the sender) is not connected; nothing to measure");
    return;
  }
  const auto sync_deadline = Clock::now() + seconds(run.options.connect_timeout_s);
  auto last_sync = Clock::time_point{};
  wait_until(
      sync_deadline, [&] { return run.receivers_joined() + 1 >= engine.open_connections(); },
      [&] {
        if (Clock::now() - last_sync < sync_interval) return;
        last_sync = Clock::now();
        run.send_sync();
        run.progress.show("sync: " + std::to_string(run.receivers_joined()) + "/" +
                          std::to_string(engine.open_connections() - 1) + " receivers");
      });
  // Lines relayed before the phase starts are drained with a short pause.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (run.receivers_joined() + 1 < engine.open_connections())
    warn(run.report, std::to_string(engine.open_connections() - 1 - run.receivers_joined()) +
                         " receivers never heard the sender before the deadline; left out");
  run.start_ns = to_ns(Clock::now() + std::chrono::milliseconds(20));
}

// The sender sends --messages lines open-loop, one per --interval-ms from start_ns.
void send_messages(BroadcastRun& run, const OpenLoopSchedule& schedule, double rate) {
  const unsigned messages = run.options.messages;
  WorkerTraffic& traffic = run.traffic.of(run.sender_worker);
  const SendPlan plan{run.start_ns, rate, messages, run.start_ns, 0};  // exact times: one send per interval
  run.sender_worker.call([&] {
    run.sender->sender = true;
    start_sending(run.sender_worker, traffic, run.traffic.phase, {Sender{run.sender, plan, 0, 0, 0, run.room}},
                  run.options.size);
  });
  const auto send_end = from_ns(schedule.intended_ns(messages)) + std::chrono::seconds(1);
  wait_until(
      send_end, [&] { return traffic.lines_sent.value() >= messages || run.engine.open_connections() == 0; },
      [&] {
        run.progress.show("broadcast: " + std::to_string(traffic.lines_sent.value()) + "/" + std::to_string(messages) +
                          " sent");
      });
}

// Waits for the lines still on their way; then the sender stops, and sends_done is final.
void drain_messages(BroadcastRun& run, const OpenLoopSchedule& schedule, std::uint64_t receivers_at_start) {
  WorkerTraffic& traffic = run.traffic.of(run.sender_worker);
  if (sliced(run.options)) {
    // Every slice counts at the same moment, --drain-s after the last message was due, each
    // on its own clock: no slice stops listening while lines to it may still come.
    wait_until(
        from_ns(schedule.intended_ns(run.options.messages) + static_cast<std::int64_t>(run.options.drain_s * 1e9)),
        [] { return false; },
        [&] { run.progress.show("draining: " + std::to_string(run.traffic.delivered()) + " delivered"); });
  } else if (run.sender) {
    drain(run.engine, run.traffic, traffic.lines_sent.value() * receivers_at_start, run.progress);
  }
  if (run.sender) {
    run.sender_worker.call([&] { stop_sending(run.sender_worker, traffic); });
    run.sends_done = traffic.lines_sent.value();
  }
}

// Completion over this process's receivers: a message every one of them had, timed. In a
// slice only the merge sees every receiver; a receiver slice does not know what was sent.
BroadcastCompletion completion_of(const BroadcastRun& run, const BroadcastCounts& counts) {
  const std::uint64_t messages_known = run.sender ? run.sends_done : (sliced(run.options) ? run.options.messages : 0);
  return broadcast_completion(messages_known, counts.receivers, counts.message_receivers, counts.max_latency);
}

json::object lines_json(const BroadcastRun& run, const BroadcastCounts& counts) {
  // A slice's expected, lost and outstanding need the sender's count, which only the slice
  // at offset 0 has: null in the others, counted by `loadgen merge` from loss_detail.
  const bool whole = !sliced(run.options) || run.has_sender;
  auto if_whole = [&](std::uint64_t value) { return whole ? json::value(value) : json::value(nullptr); };
  const LossTotals& loss = counts.loss;
  return {{"sent", run.sends_done},
          {"delivered", loss.received},
          {"expected", if_whole(run.sends_done * counts.receivers)},
          {"lost", if_whole(loss.lost)},
          {"outstanding", if_whole(loss.outstanding)},
          {"duplicated", loss.duplicated},
          {"reordered", loss.reordered},
          {"receivers", counts.receivers},
          {"receivers_with_loss", if_whole(loss.receivers_with_loss)},
          {"receivers_with_outstanding", if_whole(loss.receivers_with_outstanding)},
          {"receivers_disconnected", counts.receivers_disconnected},
          {"unknown", counts.unknown},
          {"late_sends", counts.window.late_sends},
          {"late_sends_stalled", counts.window.late_sends_stalled},
          // The server counts every sync line it relays in lines_out too.
          {"sync_sent", run.sync_sent},
          {"sync_received", counts.sync_received},
          {"server_lines_out", nullptr}};
}

// What `loadgen merge` needs: the sender's count, each receiver's track of it (loss_detail),
// and per message how many receivers here had it and the slowest of them (null: none timed).
void report_merge_detail(BroadcastRun& run, BroadcastCounts& counts) {
  json::array ids, sent, receivers, per_message_receivers, per_message_max;
  if (run.sender) ids.push_back(0), sent.push_back(run.sends_done);
  for (auto& [id, receiver] : counts.receiver_detail) receivers.push_back(std::move(receiver));
  for (std::size_t m = 0; m < counts.message_receivers.size(); ++m) {
    per_message_receivers.push_back(counts.message_receivers[m]);
    const std::int64_t max = counts.max_latency[m];
    per_message_max.push_back(max == INT64_MIN ? json::value(nullptr) : json::value(max));
  }
  run.report["loss_detail"] = json::object{{"senders", json::object{{"id", std::move(ids)}, {"sent", std::move(sent)}}},
                                           {"receivers", std::move(receivers)}};
  run.report["broadcast_detail"] = json::object{{"message_receivers", std::move(per_message_receivers)},
                                                {"message_max_latency_ns", std::move(per_message_max)}};
}

void report_broadcast(BroadcastRun& run, BroadcastCounts& counts, const CpuWindow& cpu_start,
                      const CpuWindow& cpu_end) {
  json::object& report = run.report;
  report["latency_us"] = latency_json(counts.window.latency);
  report["latency_histogram"] = histogram_json(counts.window.latency);
  report["broadcast_completion_us"] = completion_json(completion_of(run, counts));
  report["lines"] = lines_json(run, counts);
  report_merge_detail(run, counts);
  report["phases"] = sliced(run.options) ? json::value(std::move(run.phases)) : json::value(nullptr);
  report["clock"] = clock_json(run.options, counts.window.cross_slice_samples,
                               cross_slice_min_latency_us(counts.window), counts.untimed);
  const double window = std::max(1e-9, std::chrono::duration<double>(cpu_end.wall - cpu_start.wall).count());
  report["throughput"] = json::object{{"sent_per_s", static_cast<double>(run.sends_done) / window},
                                      {"deliveries_per_s", static_cast<double>(counts.loss.received) / window}};
  fill_cpu(report, cpu_start, cpu_end, run.options.server_pid);
}

}  // namespace

void run_broadcast(Engine& engine, json::object& report, Progress& progress) {
  ramp_all(engine, report, progress);
  BroadcastRun run(engine, report, progress);
  listen(run);
  if (sliced(run.options))
    sync_slices(run);
  else
    sync_receivers(run);
  const std::uint64_t receivers_at_start = run.receivers_joined();
  const double rate = 1000.0 / run.options.interval_ms;
  const OpenLoopSchedule schedule(run.start_ns, rate);
  const auto cpu_start = CpuWindow::now(run.options.server_pid);
  if (run.sender) send_messages(run, schedule, rate);
  drain_messages(run, schedule, receivers_at_start);
  const auto cpu_end = CpuWindow::now(run.options.server_pid);
  progress.finish();
  // Count: the sender is done or gone.
  BroadcastCounts counts = engine.reduce([&](Worker& worker) {
    return count_worker(run.options, worker, run.traffic.of(worker), run.tallies[worker.index()], run.sends_done);
  });
  report_broadcast(run, counts, cpu_start, cpu_end);
  finish_common(engine, report);
}

}  // namespace loadgen
