#include "scenarios.hpp"

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cmath>
#include <map>
#include <sstream>

#include "ceiling.hpp"

namespace loadgen {

namespace json = boost::json;

namespace {

Clock::duration seconds(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }
Clock::time_point from_ns(std::int64_t ns) { return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns))); }
constexpr std::int64_t late_send_ns = 1'000'000;  // a send more than 1 ms behind schedule is "late"

// Per-connection send schedule of one phase: sends [0, total) of an open-loop schedule.
struct SendPlan {
  std::int64_t start_ns;
  double rate;
  std::uint64_t total;
  std::int64_t window_start_ns;  // sends intended before this are warm-up
};

// Worker-side state of the phase in progress, set by the main thread between phases
// (never while traffic flows), read by the handlers on the worker thread.
struct Phase {
  Mode mode = Mode::chat;
  std::int64_t window_start_ns = 0, window_end_ns = INT64_MAX;
  std::vector<std::int64_t> message_intended_ns;  // broadcast
};

// One connection's share of a worker's sends in the current phase.
struct Sender {
  Connection* connection;
  SendPlan plan;
  std::uint64_t done = 0;    // sends made so far
  std::int64_t next_ns = 0;  // intended time of send `done`
};

// The sending side of one worker in the current phase, next to Worker's own counters.
struct TrafficState {
  SendPlan plan{};
  OwnedCounter lines_sent;
  std::uint64_t window_sent = 0;
  std::vector<Sender> senders;  // a heap, earliest next send first
};

// One connection's sends that are due: everything due is sent now (a behind-schedule
// sender catches up at once, each line still carrying its intended time). False when the
// sender is finished or its connection is gone.
bool send_due(Worker& worker, Sender& sender, TrafficState& state, unsigned size) {
  Connection& connection = *sender.connection;
  if (connection.state != ConnectionState::open) return false;
  const OpenLoopSchedule schedule(sender.plan.start_ns, sender.plan.rate);
  const std::int64_t now = to_ns(Clock::now());
  const std::uint64_t due = std::min(schedule.due_by(now), sender.plan.total);
  for (; sender.done < due; ++sender.done) {
    const std::int64_t intended = schedule.intended_ns(sender.done);
    if (now - intended > late_send_ns) ++worker.late_sends;
    if (intended >= sender.plan.window_start_ns) ++state.window_sent;
    format_chat_line(worker.scratch, connection.id, connection.sent, intended, size);
    if (!worker.send(connection, worker.scratch)) return false;
    ++connection.sent;
    state.lines_sent.add();
  }
  sender.next_ns = schedule.intended_ns(sender.done);
  return sender.done < sender.plan.total;
}

// The send loop of one worker: one timer for all its senders, set to the earliest next
// send. Each wake-up sends everything due on every connection; the engine hands those
// sends to the kernel together when the wake-up ends.
void send_all_due(Worker& worker, TrafficState& state, unsigned size) {
  auto later = [](const Sender& a, const Sender& b) { return a.next_ns > b.next_ns; };
  auto& heap = state.senders;
  while (!heap.empty() && heap.front().next_ns <= to_ns(Clock::now())) {
    std::pop_heap(heap.begin(), heap.end(), later);
    if (send_due(worker, heap.back(), state, size))
      std::push_heap(heap.begin(), heap.end(), later);
    else
      heap.pop_back();
  }
  if (!heap.empty()) worker.set_timer(heap.front().next_ns, [&worker, &state, size] { send_all_due(worker, state, size); });
}

// Starts the send loop of one worker over these plans (on the worker's thread).
void start_sending(Worker& worker, TrafficState& state, std::vector<Sender> senders, unsigned size) {
  for (auto& sender : senders) sender.next_ns = sender.plan.start_ns;
  state.senders = std::move(senders);
  std::make_heap(state.senders.begin(), state.senders.end(), [](const Sender& a, const Sender& b) { return a.next_ns > b.next_ns; });
  send_all_due(worker, state, size);
}

// Ends the send loop of one worker: no further sends in this phase.
void stop_sending(Worker& worker, TrafficState& state) {
  worker.cancel_timer();
  state.senders.clear();
}

std::map<std::string, std::string> parse_stats_reply(std::string_view line) {
  std::map<std::string, std::string> values;
  std::istringstream fields{std::string(line.substr(std::min<std::size_t>(line.size(), 7)))};
  std::string field;
  while (fields >> field) {
    const auto eq = field.find('=');
    if (eq != std::string::npos) values[field.substr(0, eq)] = field.substr(eq + 1);
  }
  return values;
}

// Handles every line received in broadcast and chat: replies, sync lines, chat lines.
void handle_line(Worker& worker, Connection& connection, std::string_view line, std::int64_t now, const Phase& phase) {
  if (line.starts_with('/') && !line.starts_with("//")) {
    if (line.starts_with("/joined ")) {
      if (!connection.joined) {
        connection.joined = true;
        worker.joined.add();
      }
    } else if (line.starts_with("/stats ")) {
      worker.last_stats_reply.assign(line);
      worker.stats_replies.add();
    }
    return;
  }
  if (line == "sync") {
    if (!connection.joined) {
      connection.joined = true;
      worker.joined.add();
    }
    return;
  }
  const auto chat = parse_chat_line(line);
  const std::uint32_t slot = chat ? chat->sender - connection.track_base : 0;
  if (!chat || chat->sender < connection.track_base || slot >= connection.tracks.size() || !connection.joined) {
    ++worker.unknown_lines;
    return;
  }
  SenderTrack& track = connection.tracks[slot];
  const std::uint64_t duplicates_before = track.duplicated;
  track.on_sequence(chat->seq);
  if (track.duplicated != duplicates_before) return;
  worker.unique_deliveries.add();
  worker.window_arrivals.on_arrival(now);
  const std::int64_t latency = now - chat->intended_ns;
  if (chat->intended_ns >= phase.window_start_ns && chat->intended_ns < phase.window_end_ns) {
    worker.latency.record(latency);
    ++worker.window_deliveries;
  }
  if (phase.mode == Mode::broadcast && chat->seq < worker.message_receivers.size()) {
    ++worker.message_receivers[chat->seq];
    worker.message_last_arrival_ns[chat->seq] = std::max(worker.message_last_arrival_ns[chat->seq], now);
  }
}

// Ramp to --clients in one step; fills "ramp" and "clients_connected".
void ramp_all(Engine& engine, json::object& report, Progress& progress) {
  const auto start = Clock::now();
  engine.ramp_to(engine.options().clients, [&] {
    progress.show("connecting: " + std::to_string(engine.open_connections()) + "/" + std::to_string(engine.options().clients));
  });
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const auto connected = engine.open_connections();
  report["ramp"] = json::object{{"seconds", elapsed}, {"connected", connected},
                                {"connects_per_s", elapsed > 0 ? static_cast<double>(connected) / elapsed : 0.0}};
}

void sample_step(Engine& engine, std::vector<MemorySample>& steps, json::object& report) {
  MemorySample sample = sample_memory(engine.options().server_pid);
  sample.clients = engine.open_connections();
  steps.push_back(sample);
  auto& memory = report["memory"].as_object();
  memory["steps"].as_array().push_back(memory_sample_json(sample));
  memory["per_connection"] = per_connection_json(steps);
}

struct CpuWindow {
  Clock::time_point wall;
  std::optional<CpuTimes> server;
  CpuTimes self;
  std::vector<CoreTicks> cores;
  static CpuWindow now(pid_t pid) { return {Clock::now(), pid > 0 ? process_cpu(pid) : std::nullopt, self_cpu(), read_core_ticks()}; }
};

// What the processes and the cores did between two readings.
struct CpuUse {
  double loadgen_fraction = 0;
  std::optional<double> server_fraction;
  std::vector<CoreBusy> cores;
};

// Fills report["cpu"] for the window [a, b], warns if loadgen was saturated, and returns
// the CPU fractions and per-core busy time of the window.
CpuUse fill_cpu(json::object& report, const CpuWindow& a, const CpuWindow& b, pid_t server_pid) {
  const double window = std::chrono::duration<double>(b.wall - a.wall).count();
  CpuUse use;
  auto& cpu = report["cpu"].as_object();
  if (a.server && b.server) {
    cpu["server_user_s"] = b.server->user_s - a.server->user_s;
    cpu["server_sys_s"] = b.server->sys_s - a.server->sys_s;
    use.server_fraction = cpu_fraction(b.server->user_s - a.server->user_s + b.server->sys_s - a.server->sys_s, window, server_pid);
  }
  const double user = b.self.user_s - a.self.user_s, sys = b.self.sys_s - a.self.sys_s;
  use.loadgen_fraction = loadgen_cpu_fraction(user + sys, window);
  use.cores = core_busy(a.cores, b.cores);
  cpu["loadgen_user_s"] = user;
  cpu["loadgen_sys_s"] = sys;
  cpu["window_s"] = window;
  cpu["loadgen_cpu_fraction"] = std::round(use.loadgen_fraction * 1e4) / 1e4;
  cpu["server_cpu_fraction"] = use.server_fraction ? json::value(std::round(*use.server_fraction * 1e4) / 1e4) : json::value(nullptr);
  cpu["cores"] = cores_json(use.cores);
  // Near the whole of its CPUs, the result may measure the load generator.
  const bool saturated = use.loadgen_fraction > loadgen_saturated_fraction;
  cpu["loadgen_saturated"] = saturated;
  if (saturated)
    report["warnings"].as_array().push_back(json::value("loadgen used more than " + std::to_string(std::lround(loadgen_saturated_fraction * 100)) +
                                                        "% of the CPUs it may run on during the measured window; "
                                                        "the result may measure the load generator"));
  return use;
}

// The client's end of the connections, measured instead of assumed: with the server
// stopped (its sockets stay whole while it cannot close them), loadgen resets all of its
// connections and the drop of each slab cache is what its own end held. Needs the server's
// pid and /proc/slabinfo; the server is continued on every path.
std::optional<ClientEnd> measure_client_end(Engine& engine, const std::vector<MemorySample>& steps) {
  const pid_t pid = engine.options().server_pid;
  const auto connections = engine.open_connections();
  if (pid <= 0 || connections == 0 || steps.empty() || steps.back().slab_caches.empty()) return std::nullopt;
  if (kill(pid, SIGSTOP) != 0) return std::nullopt;
  struct Continue {
    pid_t pid;
    ~Continue() { kill(pid, SIGCONT); }
  } continue_server{pid};
  const SlabCaches before = read_slab_caches();
  engine.for_each_worker([](Worker& worker) { worker.close_all(); });  // a reset: nothing left in TIME_WAIT
  // Inodes and dentries are freed after an RCU grace period: read until two readings
  // 100 ms apart agree on the socket caches, at most 3 s.
  const auto start = Clock::now();
  SlabCaches after = read_slab_caches();
  auto socket_total = [](const SlabCaches& caches) {
    std::uint64_t sum = 0;
    for (const char* name : {"TCP", "sock_inode_cache", "dentry", "filp"})
      if (const auto it = caches.find(name); it != caches.end()) sum += it->second;
    return sum;
  };
  for (std::uint64_t previous = UINT64_MAX; Clock::now() - start < std::chrono::seconds(3);) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after = read_slab_caches();
    const auto now = socket_total(after);
    if (now == previous) break;
    previous = now;
  }
  ClientEnd end;
  end.connections = connections;
  end.settle_s = std::chrono::duration<double>(Clock::now() - start).count();
  for (const auto& [name, bytes] : before) {
    const auto it = after.find(name);
    const std::uint64_t left = it == after.end() ? 0 : it->second;
    if (bytes > left) end.dropped_bytes[name] = bytes - left;
  }
  return end;
}

void finish_common(Engine& engine, json::object& report) {
  report["clients_connected"] = engine.open_connections();
  if (const auto limit = engine.limit_hit()) report["limit_hit"] = *limit;
}

void warn(json::object& report, const std::string& text) { report["warnings"].as_array().push_back(json::value(text)); }

// Ask the server for its counters on one open connection; nullopt if no reply in time.
std::optional<std::map<std::string, std::string>> query_server_stats(Engine& engine) {
  for (auto& worker : engine.workers()) {
    std::uint64_t replies_before = 0;
    bool sent = false;
    worker->call([&] {
      replies_before = worker->stats_replies.get();
      for (auto& connection : worker->connections())
        if (connection->state == ConnectionState::open && connection->joined) {
          sent = worker->send(*connection, "/stats\n");
          if (sent) break;
        }
    });
    if (!sent) continue;
    if (!wait_until(Clock::now() + std::chrono::seconds(2), [&] { return worker->stats_replies.get() > replies_before; }, nullptr))
      return std::nullopt;
    std::string reply;
    worker->call([&] { reply = worker->last_stats_reply; });
    return parse_stats_reply(reply);
  }
  return std::nullopt;
}

std::optional<std::uint64_t> stat_number(const std::optional<std::map<std::string, std::string>>& stats, const std::string& key) {
  if (!stats) return std::nullopt;
  const auto it = stats->find(key);
  if (it == stats->end()) return std::nullopt;
  try {
    return std::stoull(it->second);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

void format_chat_line(std::string& out, std::uint32_t sender, std::uint64_t seq, std::int64_t intended_ns, unsigned size) {
  out.clear();
  auto append = [&out](auto number) {
    char digits[24];  // enough for any 64-bit integer
    out.append(digits, std::to_chars(digits, digits + sizeof digits, number).ptr);
    out.push_back(' ');
  };
  append(sender);
  append(seq);
  append(intended_ns);
  if (out.size() + 1 < size) out.append(size - 1 - out.size(), 'x');
  out.push_back('\n');
}

std::optional<ChatLine> parse_chat_line(std::string_view line) {
  ChatLine chat{};
  const char* p = line.data();
  const char* end = line.data() + line.size();
  auto field = [&](auto& value) {
    const auto [next, error] = std::from_chars(p, end, value);
    if (error != std::errc() || next == end || *next != ' ') return false;
    p = next + 1;
    return true;
  };
  if (!field(chat.sender) || !field(chat.seq) || !field(chat.intended_ns)) return std::nullopt;
  return chat;
}

void run_idle(Engine& engine, json::object& report, Progress& progress) {
  const Options& options = engine.options();
  std::vector<MemorySample> steps;
  const auto cpu_start = CpuWindow::now(options.server_pid);
  sample_step(engine, steps, report);  // the baseline, before any client
  const unsigned step_count = std::max(1u, options.steps);
  double ramp_seconds = 0;
  for (unsigned step = 1; step <= step_count; ++step) {
    const auto target = static_cast<std::uint32_t>((static_cast<std::uint64_t>(options.clients) * step + step_count - 1) / step_count);
    const auto step_start = Clock::now();
    engine.ramp_to(target, [&] {
      progress.show("step " + std::to_string(step) + "/" + std::to_string(step_count) + ": " +
                    std::to_string(engine.open_connections()) + "/" + std::to_string(target) + " connected");
    });
    ramp_seconds += std::chrono::duration<double>(Clock::now() - step_start).count();
    // Hold until memory settles: two equal readings 250 ms apart, or --hold-s.
    const auto hold_end = Clock::now() + seconds(options.hold_s);
    std::optional<std::uint64_t> previous;
    while (Clock::now() < hold_end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      const auto reading = options.server_pid > 0 ? sample_memory(options.server_pid).rss_bytes : std::nullopt;
      if (reading && previous && *reading == *previous) break;
      previous = reading;
    }
    sample_step(engine, steps, report);
    if (engine.limit_hit()) break;
  }
  progress.finish();
  // loadgen closes nothing before finish_common: every close so far was the server's (or a
  // connection error), and a server that times out silent clients must not pass for one
  // that holds them at a lower cost.
  const auto closed = engine.sum(&Worker::closed);
  report["closed_by_server"] = closed;
  if (closed > 0)
    warn(report, std::to_string(closed) + " connections were closed by the server (or failed) during the ramp and holds");
  const auto connected = engine.open_connections();
  report["ramp"] = json::object{{"seconds", ramp_seconds}, {"connected", connected},
                                {"connects_per_s", ramp_seconds > 0 ? static_cast<double>(connected) / ramp_seconds : 0.0}};
  fill_cpu(report, cpu_start, CpuWindow::now(options.server_pid), options.server_pid);
  finish_common(engine, report);
  const auto client_end = measure_client_end(engine, steps);
  auto& memory = report["memory"].as_object();
  memory["client_end"] = client_end_json(client_end);
  memory["server_host"] = server_host_json(steps, client_end, kernel_stack_per_task());
}

namespace {

// Shared by broadcast and chat: wait until every sent line has arrived everywhere it
// should, or every connection is gone, or the drain deadline passed.
void drain(Engine& engine, std::uint64_t expected_unique, Progress& progress) {
  wait_until(
      Clock::now() + seconds(engine.options().drain_s),
      [&] { return engine.sum(&Worker::unique_deliveries) >= expected_unique || engine.open_connections() == 0; },
      [&] { progress.show("draining: " + std::to_string(engine.sum(&Worker::unique_deliveries)) + "/" + std::to_string(expected_unique)); });
}

struct LossTotals {
  std::uint64_t received = 0, duplicated = 0, reordered = 0;
  std::uint64_t lost = 0, outstanding = 0, receivers_with_loss = 0, receivers_with_outstanding = 0;

  // Adds one receiver's missing lines (the sum over the senders it tracks).
  void add_receiver(const SenderTrack::Missing& missing) {
    lost += missing.lost;
    outstanding += missing.outstanding;
    if (missing.lost > 0) ++receivers_with_loss;
    if (missing.outstanding > 0) ++receivers_with_outstanding;
  }
};

}  // namespace

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
    state.plan = SendPlan{start_ns, rate, messages, start_ns};
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
  std::uint64_t receivers_disconnected = 0, unknown = 0, late = 0;
  engine.for_each_worker([&](Worker& worker) {
    static std::mutex merge_mutex;
    std::lock_guard lock(merge_mutex);
    latency.merge(worker.latency);
    unknown += worker.unknown_lines;
    late += worker.late_sends;
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
                                 {"late_sends", late}, {"server_lines_out", nullptr}};
  const double window = std::max(1e-9, std::chrono::duration<double>(cpu_end.wall - cpu_start.wall).count());
  report["throughput"] = json::object{{"sent_per_s", static_cast<double>(sends_done) / window},
                                      {"deliveries_per_s", static_cast<double>(loss.received) / window}};
  fill_cpu(report, cpu_start, cpu_end, options.server_pid);
  finish_common(engine, report);
}

namespace {

// Everything the measured windows of one chat run share; lives for the whole run.
struct ChatRun {
  ChatRun(Engine& e, json::object& r, Progress& p) : engine(e), report(r), progress(p) {}
  Engine& engine;
  json::object& report;
  Progress& progress;
  std::uint32_t room_size = 1, attempted = 0;
  Phase phase;
  std::vector<TrafficState> traffic;
  std::uint64_t planned_total = 0;   // sends scheduled by every step so far
  std::uint64_t sender_pairs = 0;    // sum over rooms of m (m - 1), m its joined senders
  std::uint64_t fan_out = 0;         // the largest m - 1: the deliveries of one send
  std::uint64_t expected_so_far = 0; // deliveries owed by every line sent so far
  std::uint64_t lost_so_far = 0;
  json::value settle = nullptr;      // how the wait before the next step went
};

struct ChatLoss {
  LossTotals loss;
  std::uint64_t sent = 0, expected = 0, receivers = 0, receivers_disconnected = 0, unknown = 0;
};

// Every receiver's lines from the other joined members of its room, in one pass per worker.
// What each sender sent must be final (every send loop stopped); lines may still be
// arriving, so each receiver's counters are read once and stay consistent with each other:
// delivered + lost + outstanding = expected for every receiver.
ChatLoss count_chat_loss(Engine& engine, std::uint32_t room_size) {
  std::map<std::uint32_t, std::uint64_t> sent_by;
  engine.for_each_worker([&](Worker& worker) {
    static std::mutex merge_mutex;
    std::lock_guard lock(merge_mutex);
    for (auto& connection : worker.connections())
      if (connection->sender) sent_by[connection->id] = connection->sent;
  });
  ChatLoss result;
  std::map<std::uint32_t, std::uint64_t> room_sent, room_members;
  for (const auto& [id, sent] : sent_by) {
    room_sent[id / room_size] += sent;
    room_members[id / room_size] += 1;
    result.sent += sent;
  }
  for (const auto& [room, sent] : room_sent) result.expected += (room_members[room] - 1) * sent;
  engine.for_each_worker([&](Worker& worker) {
    static std::mutex merge_mutex;
    std::lock_guard lock(merge_mutex);
    result.unknown += worker.unknown_lines;
    for (auto& connection : worker.connections()) {
      if (!connection->sender) continue;
      ++result.receivers;
      const bool open = connection->state != ConnectionState::closed;
      if (!open) ++result.receivers_disconnected;
      SenderTrack::Missing missing;
      for (std::uint32_t slot = 0; slot < connection->tracks.size(); ++slot) {
        const SenderTrack& track = connection->tracks[slot];
        result.loss.received += track.received;
        result.loss.duplicated += track.duplicated;
        result.loss.reordered += track.reordered;
        const std::uint32_t sender = connection->track_base + slot;
        if (sender == connection->id) continue;  // a client does not hear itself
        const auto it = sent_by.find(sender);     // absent: never joined, sent nothing
        const auto m = track.missing(it == sent_by.end() ? 0 : it->second, open);
        missing.lost += m.lost;
        missing.outstanding += m.outstanding;
      }
      result.loss.add_receiver(missing);
    }
  });
  return result;
}

bool server_gone(Engine& engine) {
  const pid_t pid = engine.options().server_pid;
  return engine.open_connections() == 0 || (pid > 0 && !process_alive(pid));
}

// One measured window at one per-client rate: warm-up, window, drain. Every sender is
// stopped at the end, so the next call starts from a clean schedule.
StepResult run_chat_step(ChatRun& run, double rate) {
  Engine& engine = run.engine;
  const Options& options = engine.options();
  Phase& phase = run.phase;
  // The phase: warm-up then the measured window; each client starts at its own offset
  // within one interval, so the load is spread rather than synchronised.
  const std::int64_t start_ns = to_ns(Clock::now() + std::chrono::milliseconds(50));
  phase.window_start_ns = start_ns + static_cast<std::int64_t>(options.warmup_s * 1e9);
  phase.window_end_ns = phase.window_start_ns + static_cast<std::int64_t>(options.duration_s * 1e9);
  auto lines_sent = [&] {
    std::uint64_t total = 0;
    for (const auto& state : run.traffic) total += state.lines_sent.get();
    return total;
  };
  const std::uint64_t sent_before = lines_sent();
  engine.for_each_worker([&](Worker& worker) {
    worker.latency = LatencyRecorder();
    worker.window_deliveries = 0;
    worker.window_arrivals = ArrivalWindow{phase.window_start_ns, phase.window_end_ns, 0};
    worker.late_sends = 0;
    TrafficState& state = run.traffic[worker.index()];
    state.window_sent = 0;
    std::vector<Sender> senders;
    std::uint64_t planned = 0;
    for (auto& connection : worker.connections()) {
      if (!connection->sender) continue;
      const auto offset = static_cast<std::int64_t>(1e9 / rate * connection->id / std::max<std::uint32_t>(1, run.attempted));
      const OpenLoopSchedule schedule(start_ns + offset, rate);
      SendPlan plan{start_ns + offset, rate, schedule.due_by(phase.window_end_ns - 1), phase.window_start_ns};
      senders.push_back(Sender{connection.get(), plan});
      planned += plan.total;
    }
    state.plan.total = planned;
    start_sending(worker, state, std::move(senders), options.size);
  });
  const auto window_start = from_ns(phase.window_start_ns), window_end = from_ns(phase.window_end_ns);
  auto show = [&] {
    std::uint64_t delivered = engine.sum(&Worker::unique_deliveries);
    run.progress.show("chat rate " + std::to_string(rate) + "/s: " + std::to_string(delivered) + " delivered, " +
                      std::to_string(engine.open_connections()) + " connected");
  };
  wait_until(window_start, [] { return false; }, show);
  const auto cpu_start = CpuWindow::now(options.server_pid);
  wait_until(window_end, [] { return false; }, show);
  const auto cpu_end = CpuWindow::now(options.server_pid);
  // Senders that fell behind finish their last sends; then the totals are final.
  for (const auto& state : run.traffic) run.planned_total += state.plan.total;
  wait_until(Clock::now() + seconds(options.drain_s),
             [&] { return lines_sent() >= run.planned_total || engine.open_connections() == 0; }, show);

  // Expected deliveries so far: each joined member of a room hears every line the other
  // joined members sent, over the whole run (warm-up included).
  std::map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> rooms;  // room -> (members, lines sent)
  engine.for_each_worker([&](Worker& worker) {
    static std::mutex merge_mutex;
    std::lock_guard lock(merge_mutex);
    for (auto& connection : worker.connections()) {
      if (!connection->sender) continue;
      auto& room = rooms[connection->id / run.room_size];
      room.first += 1;
      room.second += connection->sent;
    }
  });
  std::uint64_t expected = 0;
  for (const auto& [room, totals] : rooms) expected += (totals.first - 1) * totals.second;
  drain(engine, expected, run.progress);

  LatencyRecorder latency;
  std::uint64_t window_deliveries = 0, window_sent = 0, late = 0;
  ArrivalWindow arrived{phase.window_start_ns, phase.window_end_ns, 0};
  engine.for_each_worker([&](Worker& worker) {
    // Stop any sender still behind; no further sends in this phase.
    stop_sending(worker, run.traffic[worker.index()]);
    static std::mutex merge_mutex;
    std::lock_guard lock(merge_mutex);
    latency.merge(worker.latency);
    window_deliveries += worker.window_deliveries;
    arrived.arrivals += worker.window_arrivals.arrivals;
    window_sent += run.traffic[worker.index()].window_sent;
    late += worker.late_sends;
  });
  const ChatLoss loss = count_chat_loss(engine, run.room_size);
  run.expected_so_far = loss.expected;

  StepResult result;
  result.rate_per_client = rate;
  result.offered_per_s = rate * static_cast<double>(run.sender_pairs);
  result.deliveries_per_s = arrived.per_second();
  result.granularity_per_s = static_cast<double>(run.fan_out) / options.duration_s;
  if (latency.count() > 0) result.p99_us = static_cast<double>(latency.percentile(0.99)) / 1000.0;
  result.sends = lines_sent() - sent_before;
  result.late_sends = late;
  result.lost = loss.loss.lost - std::min(loss.loss.lost, run.lost_so_far);
  run.lost_so_far = loss.loss.lost;
  result.outstanding = loss.loss.outstanding;
  const CpuUse cpu = fill_cpu(run.report, cpu_start, cpu_end, options.server_pid);
  result.server_cpu_fraction = cpu.server_fraction;
  result.loadgen_cpu_fraction = cpu.loadgen_fraction;
  result.cores = cpu.cores;
  result.server_died = server_gone(engine);
  result.detail = json::object{{"rate", rate},
                               {"latency_us", latency_json(latency)},
                               // deliveries_per_s by arrival time: a server that falls behind shows it here.
                               // window_lines_delivered counts the window's lines however late they came.
                               {"throughput", json::object{{"sent_per_s", static_cast<double>(window_sent) / options.duration_s},
                                                           {"deliveries_per_s", arrived.per_second()},
                                                           {"offered_per_s", result.offered_per_s},
                                                           {"window_arrivals", arrived.arrivals},
                                                           {"window_lines_sent", window_sent},
                                                           {"window_lines_delivered", window_deliveries}}},
                               {"late_sends", late},
                               {"lost", result.lost},
                               {"outstanding", result.outstanding},
                               {"expected_so_far", expected},
                               {"cpu", run.report["cpu"]},
                               {"settle", run.settle}};
  run.settle = nullptr;
  return result;
}

// Before a search step: every line sent so far has arrived (or is known lost) and the
// server has gone idle (under 5% of a core over 250 ms), so no step inherits another's
// backlog. Waits at most --drain-s; false if the server is gone.
bool settle_before_step(ChatRun& run) {
  Engine& engine = run.engine;
  const Options& options = engine.options();
  const auto start = Clock::now();
  const auto deadline = start + seconds(options.drain_s);
  constexpr auto interval = std::chrono::milliseconds(250);
  constexpr double idle_fraction = 0.05;
  bool drained = false, idle = options.server_pid <= 0;
  std::optional<double> last_fraction;
  while (!server_gone(engine)) {
    drained = engine.sum(&Worker::unique_deliveries) + run.lost_so_far >= run.expected_so_far;  // lost lines never come
    const auto before = options.server_pid > 0 ? process_cpu(options.server_pid) : std::nullopt;
    std::this_thread::sleep_for(interval);
    if (options.server_pid > 0) {
      const auto after = process_cpu(options.server_pid);
      if (!before || !after) break;
      // Of one core, not of the server's cores: the question is whether it still works at all.
      last_fraction = (after->user_s + after->sys_s - before->user_s - before->sys_s) / std::chrono::duration<double>(interval).count();
      idle = *last_fraction < idle_fraction;
    }
    if ((drained && idle) || Clock::now() >= deadline) break;
  }
  if (server_gone(engine)) return false;
  run.settle = json::object{{"seconds", std::chrono::duration<double>(Clock::now() - start).count()},
                            {"drained", drained},
                            {"server_idle", options.server_pid > 0 ? json::value(idle) : json::value(nullptr)},
                            {"server_cpu_fraction", last_fraction ? json::value(std::round(*last_fraction * 1e4) / 1e4) : json::value(nullptr)}};
  if (!drained || !idle)
    warn(run.report, "before a ceiling step the server was still " + std::string(drained ? "busy" : "delivering") +
                         " after --drain-s; that step may include the previous one's backlog");
  return true;
}

}  // namespace

void run_chat(Engine& engine, json::object& report, Progress& progress) {
  const Options& options = engine.options();
  std::vector<MemorySample> steps;
  sample_step(engine, steps, report);
  ramp_all(engine, report, progress);
  sample_step(engine, steps, report);

  ChatRun run(engine, report, progress);
  run.room_size = std::max(1u, options.room_size);
  run.attempted = engine.attempted();
  run.phase.mode = Mode::chat;
  Phase& phase = run.phase;
  engine.for_each_worker([&](Worker& worker) {
    worker.set_line_handler([&phase](Worker& w, Connection& c, std::string_view line, std::int64_t now) { handle_line(w, c, line, now, phase); });
    for (auto& connection : worker.connections()) {
      const std::uint32_t room = connection->id / run.room_size;
      connection->track_base = room * run.room_size;
      connection->tracks.assign(std::min(run.room_size, run.attempted - connection->track_base), SenderTrack{});
      worker.send(*connection, "/join r" + std::to_string(room) + "\n");
    }
  });
  const bool all_joined = wait_until(
      Clock::now() + seconds(options.connect_timeout_s), [&] { return engine.sum(&Worker::joined) >= engine.open_connections(); },
      [&] { progress.show("joining: " + std::to_string(engine.sum(&Worker::joined)) + "/" + std::to_string(engine.open_connections())); });
  if (!all_joined) warn(report, "not every client got /joined before the deadline; those are left out");
  const auto stats_before = query_server_stats(engine);

  run.traffic = std::vector<TrafficState>(engine.workers().size());
  std::map<std::uint32_t, std::uint64_t> room_senders;
  engine.for_each_worker([&](Worker& worker) {
    static std::mutex merge_mutex;
    for (auto& connection : worker.connections())
      if (connection->joined && connection->state == ConnectionState::open) {
        connection->sender = true;
        std::lock_guard lock(merge_mutex);
        ++room_senders[connection->id / run.room_size];
      }
  });
  for (const auto& [room, members] : room_senders) {
    run.sender_pairs += members * (members - 1);
    run.fan_out = std::max(run.fan_out, members - 1);
  }

  json::array rate_steps;
  if (options.find_ceiling) {
    if (options.server_pid <= 0)
      warn(report, "--find-ceiling without --server-pid cannot wait for the server to go idle between steps, nor report its CPU");
    CeilingOptions search;
    search.start_rate = options.rates.front();
    search.growth = options.ceiling_growth;
    search.precision = options.ceiling_precision;
    search.max_steps = options.ceiling_max_steps;
    search.criteria.p99_bar_us = options.p99_bar_ms * 1000;
    search.criteria.max_late_fraction = options.late_bar_pct / 100;
    const CeilingResult result = find_ceiling(
        search,
        [&](double rate) {
          StepResult step = run_chat_step(run, rate);
          rate_steps.push_back(step.detail);
          return step;
        },
        [&] { return settle_before_step(run); });
    report["ceiling"] = ceiling_json(result);
    if (result.server_died)
      engine.hit_limit("server died during the ceiling search, after " + std::to_string(result.steps.size()) + " steps");
    // The top-level figures are the ceiling's window (or the last one, if no rate passed).
    if (!rate_steps.empty()) {
      const json::object& top = rate_steps[result.ceiling.value_or(rate_steps.size() - 1)].as_object();
      report["latency_us"] = top.at("latency_us");
      report["throughput"] = top.at("throughput");
      report["cpu"] = top.at("cpu");
    }
  } else {
    for (const double rate : options.rates) {
      const StepResult step = run_chat_step(run, rate);
      rate_steps.push_back(step.detail);
      report["latency_us"] = step.detail.at("latency_us");
      report["throughput"] = step.detail.at("throughput");
      if (engine.open_connections() == 0) break;
    }
  }
  progress.finish();
  const auto stats_after = query_server_stats(engine);

  const ChatLoss totals = count_chat_loss(engine, run.room_size);
  const LossTotals& loss = totals.loss;
  if (loss.outstanding > 0)
    warn(report, std::to_string(loss.outstanding) + " lines had not arrived by the end of the run (server behind by more than --drain-s); "
                 "latency percentiles leave them out, so they are optimistic");

  const auto out_before = stat_number(stats_before, "lines_out"), out_after = stat_number(stats_after, "lines_out");
  const auto in_before = stat_number(stats_before, "lines_in"), in_after = stat_number(stats_after, "lines_in");
  json::value server_lines_out = nullptr;
  if (out_before && out_after) server_lines_out = *out_after - *out_before;
  report["lines"] = json::object{{"sent", totals.sent}, {"delivered", loss.received}, {"expected", totals.expected},
                                 {"lost", loss.lost}, {"outstanding", loss.outstanding}, {"duplicated", loss.duplicated},
                                 {"reordered", loss.reordered}, {"receivers", totals.receivers},
                                 {"receivers_with_loss", loss.receivers_with_loss},
                                 {"receivers_with_outstanding", loss.receivers_with_outstanding},
                                 {"receivers_disconnected", totals.receivers_disconnected}, {"unknown", totals.unknown},
                                 {"server_lines_out", server_lines_out}};
  if (stats_after) {
    json::object server;
    for (const auto& [key, value] : *stats_after) server[key] = value;
    json::value lines_in_delta = nullptr;
    if (in_before && in_after) lines_in_delta = *in_after - *in_before;
    report["server_stats"] = json::object{{"after", server}, {"lines_in_delta", lines_in_delta}, {"lines_out_delta", server_lines_out}};
    if (out_before && out_after && *out_after - *out_before != loss.received)
      warn(report, "server lines_out delta " + std::to_string(*out_after - *out_before) + " differs from the " +
                       std::to_string(loss.received) + " deliveries received");
  } else {
    warn(report, "the server did not answer /stats at the end; server_lines_out is null");
  }
  report["rate_steps"] = rate_steps;
  finish_common(engine, report);
}

}  // namespace loadgen
