// The parts of the scenarios every mode, or both traffic modes, use (scenario_common.hpp).
#include "scenario_common.hpp"

#include <algorithm>
#include <cmath>

namespace loadgen {

namespace json = boost::json;

namespace {

constexpr std::int64_t late_send_ns = 1'000'000;  // a send more than 1 ms behind schedule is "late"

// One connection's sends that are due: everything due is sent now (a behind-schedule
// sender catches up at once, each line still carrying its intended time). False when the
// sender is finished or its connection is gone. stalled_ns: how long past the wake-up's
// deadline the thread was off its core (see send_all_due).
bool send_due(Worker& worker, WorkerTraffic& traffic, const Phase& phase, Sender& sender, unsigned size,
              std::int64_t stalled_ns) {
  Connection& connection = *sender.connection;
  if (connection.state != ConnectionState::open) return false;
  const OpenLoopSchedule schedule(sender.plan.start_ns, sender.plan.rate, sender.plan.tick_ns);
  const std::int64_t now = to_ns(Clock::now());
  const std::uint64_t due = std::min(schedule.due_by(now), sender.plan.total);
  for (; sender.done < due; ++sender.done) {
    const std::int64_t intended = schedule.intended_ns(sender.done);
    if (now - intended > late_send_ns) {
      ++traffic.window.late_sends;
      // Had the thread had its core, this send would not have been late.
      if (now - intended - stalled_ns <= late_send_ns) ++traffic.window.late_sends_stalled;
    }
    if (intended >= sender.plan.window_start_ns) ++traffic.window.sent;
    format_chat_line(traffic.scratch, sender.line_id, connection.sent, intended + phase.line_clock_offset_ns, size,
                     phase.reference_clock);
    if (!worker.send(connection, worker.wire().publish(traffic.frame, sender.room, traffic.scratch))) return false;
    ++connection.sent;
    ++traffic.lines_sent;
  }
  sender.next_ns = schedule.intended_ns(sender.done);
  return sender.done < sender.plan.total;
}

// The send loop of one worker: one timer for all its senders, set to the earliest next
// send. Each wake-up sends everything due on every connection; the engine hands those
// sends to the kernel together when the wake-up ends.
//
// A send can be late because loadgen was busy, or because its thread was kept off its core
// past the deadline: a timer the machine delivered late (a VM wakes an idle core more than
// 1 ms late now and then), or another task on the core. The second is told apart by the
// thread's CPU time: of the time since the last wake-up, what the thread did not run, less
// what it was meant to sleep (until the deadline), is time it was off its core after the
// deadline. A lower bound: any doubt counts against loadgen.
void send_all_due(Worker& worker, WorkerTraffic& traffic, const Phase& phase, unsigned size) {
  auto later = [](const Sender& a, const Sender& b) { return a.next_ns > b.next_ns; };
  auto& heap = traffic.senders;
  const std::int64_t now = to_ns(Clock::now()), cpu = thread_cpu_ns();
  const std::int64_t stalled_ns =
      traffic.woke_ns >= 0 && !heap.empty()
          ? off_core_after_deadline_ns(traffic.woke_ns, traffic.woke_cpu_ns, now, cpu, heap.front().next_ns)
          : 0;
  traffic.woke_ns = now;
  traffic.woke_cpu_ns = cpu;
  while (!heap.empty() && heap.front().next_ns <= to_ns(Clock::now())) {
    std::pop_heap(heap.begin(), heap.end(), later);
    if (send_due(worker, traffic, phase, heap.back(), size, stalled_ns))
      std::push_heap(heap.begin(), heap.end(), later);
    else
      heap.pop_back();
  }
  if (!heap.empty())
    worker.set_timer(heap.front().next_ns,
                     [&worker, &traffic, &phase, size] { send_all_due(worker, traffic, phase, size); });
}

}  // namespace

WindowCounts& WindowCounts::operator+=(const WindowCounts& other) {
  latency.merge(other.latency);
  deliveries += other.deliveries;
  arrivals.arrivals += other.arrivals.arrivals;  // the same window on every worker
  sent += other.sent;
  late_sends += other.late_sends;
  late_sends_stalled += other.late_sends_stalled;
  cross_slice_samples += other.cross_slice_samples;
  cross_slice_min_ns = std::min(cross_slice_min_ns, other.cross_slice_min_ns);
  return *this;
}

Traffic::Traffic(Engine& engine) : engine_(engine), workers_(engine.workers().size()) {}

Traffic::~Traffic() {
  engine_.for_each_worker([](Worker& worker) {
    worker.cancel_timer();
    worker.set_message_handler(nullptr);
  });
}

std::uint64_t Traffic::sum(OwnedCount WorkerTraffic::*counter) const {
  std::uint64_t total = 0;
  for (const WorkerTraffic& traffic : workers_) total += (traffic.*counter).value();
  return total;
}

std::int64_t off_core_after_deadline_ns(std::int64_t woke_ns, std::int64_t woke_cpu_ns, std::int64_t now_ns,
                                        std::int64_t cpu_ns, std::int64_t deadline_ns) {
  const std::int64_t deadline = std::max(deadline_ns, woke_ns);
  const std::int64_t off_core = (now_ns - woke_ns) - (cpu_ns - woke_cpu_ns);
  return std::clamp<std::int64_t>(off_core - (deadline - woke_ns), 0, std::max<std::int64_t>(0, now_ns - deadline));
}

void start_sending(Worker& worker, WorkerTraffic& traffic, const Phase& phase, std::vector<Sender> senders,
                   unsigned size) {
  for (auto& sender : senders) sender.next_ns = sender.plan.start_ns;
  traffic.senders = std::move(senders);
  std::make_heap(traffic.senders.begin(), traffic.senders.end(),
                 [](const Sender& a, const Sender& b) { return a.next_ns > b.next_ns; });
  send_all_due(worker, traffic, phase, size);
}

void stop_sending(Worker& worker, WorkerTraffic& traffic) {
  worker.cancel_timer();
  traffic.senders.clear();
  traffic.woke_ns = -1;
}

void mark_joined(WorkerTraffic& traffic, Connection& connection) {
  if (connection.joined) return;
  connection.joined = true;
  ++traffic.joined;
}

std::optional<Delivery> count_chat_line(WorkerTraffic& traffic, Connection& connection, std::string_view line,
                                        std::int64_t now, const Phase& phase) {
  const auto chat = parse_chat_line(line);
  const std::uint32_t slot = chat ? chat->sender - connection.track_base : 0;
  if (!chat || chat->sender < connection.track_base || slot >= connection.tracks.size() || !connection.joined) {
    ++traffic.unknown_lines;
    return std::nullopt;
  }
  SenderTrack& track = connection.tracks[slot];
  const std::uint64_t duplicates_before = track.duplicated;
  track.on_sequence(chat->seq);
  if (track.duplicated != duplicates_before) return std::nullopt;
  ++traffic.unique_deliveries;
  traffic.window.arrivals.on_arrival(now);
  // Another process's line is timed only if both clocks were measured against the run's
  // reference (its line says so, and this process's offset is known): then the sample is
  // within the two measurements' bounds. Otherwise it counts above for loss and order only.
  const bool cross_slice = chat->sender < phase.own_first || chat->sender >= phase.own_end;
  if (cross_slice && !(chat->reference_clock && phase.reference_clock)) {
    ++traffic.cross_slice_deliveries;
    return Delivery{chat->seq, std::nullopt};
  }
  // On this process's steady clock: its own lines exactly, another's within the bounds.
  const std::int64_t intended = chat->intended_ns - phase.line_clock_offset_ns;
  const std::int64_t latency = now - intended;
  if (intended >= traffic.window.intended_from_ns && intended < traffic.window.intended_until_ns) {
    traffic.window.latency.record(latency);
    ++traffic.window.deliveries;
    if (cross_slice) {
      ++traffic.window.cross_slice_samples;
      traffic.window.cross_slice_min_ns = std::min(traffic.window.cross_slice_min_ns, latency);
    }
  }
  return Delivery{chat->seq, latency};
}

void ramp_all(Engine& engine, json::object& report, Progress& progress) {
  std::vector<MemorySample> steps;
  sample_step(engine, steps, report);
  const auto start = Clock::now();
  engine.ramp_to(engine.options().clients, [&] {
    progress.show("connecting: " + std::to_string(engine.open_connections()) + "/" +
                  std::to_string(engine.options().clients));
  });
  report["ramp"] = ramp_json(std::chrono::duration<double>(Clock::now() - start).count(), engine.open_connections());
  sample_step(engine, steps, report);
}

json::object ramp_json(double seconds, std::uint64_t connected) {
  return {{"seconds", seconds},
          {"connected", connected},
          {"connects_per_s", seconds > 0 ? static_cast<double>(connected) / seconds : 0.0}};
}

void sample_step(Engine& engine, std::vector<MemorySample>& steps, json::object& report) {
  MemorySample sample = sample_memory(engine.options().server_pid);
  sample.clients = engine.open_connections();
  steps.push_back(sample);
  auto& memory = report["memory"].as_object();
  memory["steps"].as_array().push_back(memory_sample_json(sample));
  memory["per_connection"] = per_connection_json(steps);
}

CpuUse fill_cpu(json::object& report, const CpuWindow& a, const CpuWindow& b, pid_t server_pid) {
  const double window = std::chrono::duration<double>(b.wall - a.wall).count();
  CpuUse use;
  auto& cpu = report["cpu"].as_object();
  if (a.server && b.server) {
    cpu["server_user_s"] = b.server->user_s - a.server->user_s;
    cpu["server_sys_s"] = b.server->sys_s - a.server->sys_s;
    const double server_s = b.server->user_s - a.server->user_s + b.server->sys_s - a.server->sys_s;
    use.server_fraction = cpu_fraction(server_s, window, server_pid);
    if (window > 0) use.server_cores = server_s / window;
  }
  if (a.server_cgroup && b.server_cgroup) use.server_cgroup = cgroup_throttling(*a.server_cgroup, *b.server_cgroup);
  cpu["server_cgroup"] = use.server_cgroup ? json::value(throttling_json(*use.server_cgroup)) : json::value(nullptr);
  const double user = b.self.user_s - a.self.user_s, sys = b.self.sys_s - a.self.sys_s;
  use.loadgen_fraction = loadgen_cpu_fraction(user + sys, window);
  use.cores = core_busy(a.cores, b.cores, window);
  double mine = 0;
  unsigned mine_count = 0;
  for (const CoreBusy& core : use.cores)
    if (allowed_cpu(core.cpu)) mine += core.busy, ++mine_count;
  if (mine_count > 0) use.others_on_loadgen_cores = std::max(0.0, mine / mine_count - use.loadgen_fraction);
  cpu["loadgen_user_s"] = user;
  cpu["loadgen_sys_s"] = sys;
  cpu["window_s"] = window;
  cpu["loadgen_cpu_fraction"] = std::round(use.loadgen_fraction * 1e4) / 1e4;
  cpu["server_cpu_fraction"] =
      use.server_fraction ? json::value(std::round(*use.server_fraction * 1e4) / 1e4) : json::value(nullptr);
  cpu["cores"] = cores_json(use.cores);
  cpu["others_on_loadgen_cores"] = std::round(use.others_on_loadgen_cores * 1e4) / 1e4;
  use.loadgen_throttled_s = static_cast<double>(std::max<std::int64_t>(0, b.throttled_ns - a.throttled_ns)) / 1e9;
  cpu["loadgen_throttled_s"] = use.loadgen_throttled_s;
  // Near the whole of its CPUs, the result may measure the load generator.
  const bool saturated = use.loadgen_fraction > loadgen_saturated_fraction;
  cpu["loadgen_saturated"] = saturated;
  if (saturated)
    report["warnings"].as_array().push_back(json::value("loadgen used more than " +
                                                        std::to_string(std::lround(loadgen_saturated_fraction * 100)) +
                                                        "% of the CPUs it may run on during the measured window; "
                                                        "the result may measure the load generator"));
  return use;
}

void finish_common(Engine& engine, json::object& report) {
  report["clients_connected"] = engine.open_connections();
  if (const auto limit = engine.limit_hit()) report["limit_hit"] = *limit;
  if (const auto error = engine.server_error())
    warn(report,
         "the server answered with an error, or sent bytes loadgen could not parse (the first of them): " + *error);
  // Broadcast and chat: copies of a client's own lines that the server handed back to it,
  // dropped (Redis pub/sub delivers them; docs/loadgen.md, "Protocols").
  if (auto* lines = report["lines"].if_object())
    (*lines)["own_copies"] = engine.reduce([](Worker& worker) { return worker.own_copies; });
  const std::uint64_t untimed = engine.reduce([](Worker& worker) { return worker.untimed_reads; });
  if (untimed > 0)
    warn(report, std::to_string(untimed) +
                     " reads came without the kernel's receive time; their lines were timed when read, "
                     "so their latency includes loadgen's own delay");
}

void warn(json::object& report, const std::string& text) { report["warnings"].as_array().push_back(json::value(text)); }

void drain(Engine& engine, const Traffic& traffic, std::uint64_t expected_unique, Progress& progress) {
  wait_until(
      Clock::now() + seconds(engine.options().drain_s),
      [&] { return traffic.delivered() >= expected_unique || engine.open_connections() == 0; },
      [&] {
        progress.show("draining: " + std::to_string(traffic.delivered()) + "/" + std::to_string(expected_unique));
      });
}

void drain_until_quiet(Engine& engine, const Traffic& traffic, Clock::duration quiet, Progress& progress) {
  std::uint64_t last = traffic.delivered();
  auto last_change = Clock::now();
  wait_until(
      Clock::now() + seconds(engine.options().drain_s),
      [&] {
        const std::uint64_t now = traffic.delivered();
        if (now != last) last = now, last_change = Clock::now();
        return Clock::now() - last_change >= quiet || engine.open_connections() == 0;
      },
      [&] { progress.show("draining: " + std::to_string(last) + " delivered"); });
}

double reference_ahead_ms(const Options& options) {
  const std::int64_t injected_ns = std::llround(options.clock_offset_ms * 1e6);
  return static_cast<double>(injected_ns - options.clock_offset_ns) / 1e6;
}

double set_line_clock(Phase& phase, const Options& options) {
  phase.own_first = options.client_offset;
  phase.own_end = options.client_offset + options.clients;
  // The injected skew less the measured offset (which includes it), or the skew alone if unmeasured.
  const std::int64_t injected_ns = std::llround(options.clock_offset_ms * 1e6);
  phase.reference_clock = options.clock_offset_bound_ns > 0;
  // Fixed for the run, so this process's own lines map back exactly.
  phase.line_clock_offset_ns =
      phase.reference_clock ? unix_minus_steady_ns() + injected_ns - options.clock_offset_ns : injected_ns;
  return reference_ahead_ms(options);
}

json::value cross_slice_min_latency_us(const WindowCounts& counts) {
  if (counts.cross_slice_samples == 0) return nullptr;
  return static_cast<double>(counts.cross_slice_min_ns) / 1e3;
}

json::object receiver_loss_json(const Options& options, const Connection& connection) {
  json::array next, gaps;
  std::uint64_t duplicated = 0, reordered = 0;
  for (const SenderTrack& track : connection.tracks) {
    next.push_back(track.next_expected);
    gaps.push_back(track.next_expected - std::min(track.next_expected, track.unique_received()));
    duplicated += track.duplicated;
    reordered += track.reordered;
  }
  return {{"id", global_id(options, connection)},
          {"open", connection.state != ConnectionState::closed},
          {"room_first", connection.track_base},
          {"next", std::move(next)},
          {"gaps", std::move(gaps)},
          {"duplicated", duplicated},
          {"reordered", reordered}};
}

std::int64_t unix_minus_steady_ns() {
  const std::int64_t steady = to_ns(Clock::now());
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
             .count() -
         steady;
}

std::int64_t unix_ms_now(double clock_offset_ms) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration_cast<std::chrono::milliseconds>(now).count() + std::llround(clock_offset_ms);
}

std::int64_t steady_ns_at_unix_ms(std::int64_t unix_ms, double clock_offset_ms) {
  const std::int64_t steady = to_ns(Clock::now());
  const auto now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count() +
      static_cast<std::int64_t>(std::llround(clock_offset_ms * 1e6));
  return steady + (unix_ms * 1'000'000 - now);
}

boost::json::object clock_json(const Options& options, boost::json::value cross_samples,
                               boost::json::value cross_min_latency_us, std::uint64_t untimed) {
  const bool measured = options.clock_offset_bound_ns > 0;
  auto if_measured = [&](std::int64_t v) { return measured ? boost::json::value(v) : boost::json::value(nullptr); };
  return {
      {"line_clock", measured ? "reference clock: this host's UNIX clock less its measured offset"
                              : "steady clock of the sending process"},
      {"timed",
       measured ? "same-process pairs; cross-slice pairs whose sender's offset was measured too, within the two bounds"
                : "same-process pairs only"},
      {"clock_offset_ms", options.clock_offset_ms},
      {"measured_offset_ns", if_measured(options.clock_offset_ns)},
      {"measured_offset_bound_ns", if_measured(options.clock_offset_bound_ns)},
      {"cross_slice_samples", std::move(cross_samples)},
      {"cross_slice_min_latency_us", std::move(cross_min_latency_us)},
      {"cross_slice_deliveries_untimed", untimed}};
}

}  // namespace loadgen
