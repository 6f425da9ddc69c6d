// broadcast mode (SPEC §3): one sender, every other client a receiver; per-line
// latency and the completion time of each message.
#include <algorithm>
#include <cmath>

#include "scenario_common.hpp"

namespace loadgen {

namespace json = boost::json;

void run_broadcast(Engine& engine, json::object& report, Progress& progress) {
  const Options& options = engine.options();
  std::vector<MemorySample> steps;
  sample_step(engine, steps, report);
  ramp_all(engine, report, progress);
  sample_step(engine, steps, report);

  const unsigned messages = options.messages;
  Phase phase;
  phase.mode = Mode::broadcast;
  std::vector<TrafficState> traffic(engine.workers().size());
  engine.for_each_worker([&](Worker& worker) {
    worker.message_receivers.assign(messages, 0);
    worker.message_last_arrival_ns.assign(messages, 0);
    for (auto& connection : worker.connections()) connection->tracks.assign(connection->id == 0 ? 0 : 1, SenderTrack{});
    worker.set_line_handler([&phase](Worker& w, Connection& c, std::string_view line, std::int64_t now) { handle_line(w, c, line, now, phase); });
  });

  // Sync: the server may register a connection some time after connect() returned; a
  // receiver takes part once it has heard the sender, so no message goes to a receiver
  // that was never in the room. Uses chat lines only, as the seed's server knows no commands.
  Worker& sender_worker = engine.worker_of(0);
  Connection* sender = nullptr;
  sender_worker.call([&] {
    sender = sender_worker.find(0);
    if (sender && sender->state != ConnectionState::open) sender = nullptr;
    if (sender) sender->joined = true;  // the sender never hears itself
  });
  std::uint64_t receivers = 0;
  if (!sender) {
    warn(report, "client 0 (the sender) is not connected; nothing to measure");
  } else {
    const auto sync_deadline = Clock::now() + seconds(options.connect_timeout_s);
    auto last_sync = Clock::time_point{};
    wait_until(sync_deadline, [&] { return engine.sum(&Worker::joined) + 1 >= engine.open_connections(); }, [&] {
      if (Clock::now() - last_sync < std::chrono::milliseconds(50)) return;
      last_sync = Clock::now();
      sender_worker.post([&] { sender_worker.send(*sender, "sync\n"); });
      progress.show("sync: " + std::to_string(engine.sum(&Worker::joined)) + "/" + std::to_string(engine.open_connections() - 1) + " receivers");
    });
    // Lines relayed before the phase starts are drained with a short pause.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    receivers = engine.sum(&Worker::joined);
    if (receivers + 1 < engine.open_connections())
      warn(report, std::to_string(engine.open_connections() - 1 - receivers) + " receivers never heard the sender before the deadline; left out");
  }

  const double rate = 1000.0 / options.interval_ms;
  const std::int64_t start_ns = to_ns(Clock::now() + std::chrono::milliseconds(20));
  const OpenLoopSchedule schedule(start_ns, rate);
  const auto cpu_start = CpuWindow::now(options.server_pid);
  std::uint64_t sends_done = 0;
  if (sender) {
    phase.window_start_ns = start_ns;
    TrafficState& state = traffic[sender_worker.index()];
    state.plan = SendPlan{start_ns, rate, messages, start_ns, 0};  // exact times: one send per interval
    sender_worker.call([&] {
      sender->sender = true;
      start_sending(sender_worker, state, {Sender{sender, state.plan}}, options.size);
    });
    const auto send_end = from_ns(schedule.intended_ns(messages)) + std::chrono::seconds(1);
    wait_until(send_end, [&] { return state.lines_sent.get() >= messages || engine.open_connections() == 0; }, [&] {
      progress.show("broadcast: " + std::to_string(state.lines_sent.get()) + "/" + std::to_string(messages) + " sent");
    });
    drain(engine, messages * receivers, progress);
    sender_worker.call([&] { stop_sending(sender_worker, state); });
    sends_done = state.lines_sent.get();
  }
  const auto cpu_end = CpuWindow::now(options.server_pid);
  progress.finish();

  // Merge: the workers are idle now (the sender is done or gone).
  LatencyRecorder latency, completion;
  std::vector<std::uint32_t> message_receivers(messages, 0);
  std::vector<std::int64_t> last_arrival(messages, 0);
  LossTotals loss;
  std::uint64_t receivers_disconnected = 0, unknown = 0, late = 0, late_stalled = 0;
  engine.for_each_worker([&](Worker& worker) {
    static std::mutex merge_mutex;
    std::lock_guard lock(merge_mutex);
    latency.merge(worker.latency);
    unknown += worker.unknown_lines;
    late += worker.late_sends;
    late_stalled += worker.late_sends_stalled;
    for (unsigned m = 0; m < messages; ++m) {
      message_receivers[m] += worker.message_receivers[m];
      last_arrival[m] = std::max(last_arrival[m], worker.message_last_arrival_ns[m]);
    }
    for (auto& connection : worker.connections()) {
      if (connection->id == 0 || !connection->joined) continue;
      const SenderTrack& track = connection->tracks[0];
      loss.received += track.received;
      loss.duplicated += track.duplicated;
      loss.reordered += track.reordered;
      loss.add_receiver(track.missing(sends_done, connection->state != ConnectionState::closed));
      if (connection->state == ConnectionState::closed) ++receivers_disconnected;
    }
  });
  std::uint64_t incomplete = 0;
  for (unsigned m = 0; m < sends_done; ++m) {
    if (receivers > 0 && message_receivers[m] == receivers)
      completion.record(last_arrival[m] - schedule.intended_ns(m));
    else
      ++incomplete;
  }
  const std::uint64_t expected = sends_done * receivers;
  report["latency_us"] = latency_json(latency);
  json::value completion_json = nullptr;
  if (completion.count() > 0) {
    auto us = [&](double q) { return std::round(static_cast<double>(completion.percentile(q))) / 1000.0; };
    completion_json = json::object{{"p50", us(0.5)}, {"p95", us(0.95)}, {"p99", us(0.99)},
                                   {"max", static_cast<double>(completion.max()) / 1000.0}, {"count", completion.count()},
                                   {"incomplete_messages", incomplete}};
  }
  report["broadcast_completion_us"] = completion_json;
  report["lines"] = json::object{{"sent", sends_done}, {"delivered", loss.received}, {"expected", expected},
                                 {"lost", loss.lost}, {"outstanding", loss.outstanding}, {"duplicated", loss.duplicated},
                                 {"reordered", loss.reordered}, {"receivers", receivers},
                                 {"receivers_with_loss", loss.receivers_with_loss},
                                 {"receivers_with_outstanding", loss.receivers_with_outstanding},
                                 {"receivers_disconnected", receivers_disconnected}, {"unknown", unknown},
                                 {"late_sends", late}, {"late_sends_stalled", late_stalled}, {"server_lines_out", nullptr}};
  const double window = std::max(1e-9, std::chrono::duration<double>(cpu_end.wall - cpu_start.wall).count());
  report["throughput"] = json::object{{"sent_per_s", static_cast<double>(sends_done) / window},
                                      {"deliveries_per_s", static_cast<double>(loss.received) / window}};
  fill_cpu(report, cpu_start, cpu_end, options.server_pid);
  finish_common(engine, report);
}

}  // namespace loadgen
