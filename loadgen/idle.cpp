// idle mode (docs/loadgen.md, "What each mode does"): ramp in --steps, memory per
// connection at each step, and the client's end of the connections measured at the end.
#include <algorithm>
#include <cmath>
#include <csignal>

#include "scenario_common.hpp"

namespace loadgen {

namespace json = boost::json;

namespace {

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

// Step s of step_count ramps to this many clients: s / step_count of --clients, rounded up.
std::uint32_t step_target(const Options& options, unsigned step, unsigned step_count) {
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(options.clients) * step + step_count - 1) / step_count);
}

// Ramps to the step's target; the seconds it took.
double ramp_step(Engine& engine, unsigned step, unsigned step_count, std::uint32_t target, Progress& progress) {
  const auto start = Clock::now();
  engine.ramp_to(target, [&] {
    progress.show("step " + std::to_string(step) + "/" + std::to_string(step_count) + ": " +
                  std::to_string(engine.open_connections()) + "/" + std::to_string(target) + " connected");
  });
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Holds until the server's memory settles: two equal readings of its RSS 250 ms apart, or --hold-s.
void hold_until_settled(const Options& options) {
  const auto hold_end = Clock::now() + seconds(options.hold_s);
  std::optional<std::uint64_t> previous;
  while (Clock::now() < hold_end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    const auto reading = options.server_pid > 0 ? sample_memory(options.server_pid).rss_bytes : std::nullopt;
    if (reading && previous && *reading == *previous) break;
    previous = reading;
  }
}

// A slice's idle steps on the steady clock: step s ramps from start + (s-1) span + lead,
// must be connected ramp after that, and is sampled at start + s span.
struct SliceSchedule {
  std::int64_t start_ns, lead_ns, ramp_ns, span_ns;
};

SliceSchedule slice_schedule(const Options& options, unsigned step_count, double ahead_ms) {
  // The deadline of one step's ramp: --connect-timeout-s, plus its pacing at --connect-rate
  // for the largest step of any slice, so every slice lays out the same times.
  const double pacing_s =
      options.connect_rate > 0
          ? std::ceil(static_cast<double>(options.clients_total) / step_count) / options.connect_rate
          : 0;
  const std::int64_t ramp_ns = static_cast<std::int64_t>((options.connect_timeout_s + pacing_s) * 1e9);
  const std::int64_t lead_ns = 500'000'000;  // between a sample and the next step's connects
  return {steady_ns_at_unix_ms(options.start_at_ms, ahead_ms), lead_ns, ramp_ns,
          lead_ns + ramp_ns + static_cast<std::int64_t>(options.hold_s * 1e9)};
}

// Idle as a slice of a run over many hosts (docs/distributed.md): the baseline and every
// step are sampled at times laid out from --start-at, the same on every slice, since the
// server's memory is read on its own host at those times (scripts/run_distributed.sh).
// Step s ramps from T + (s-1) span + 0.5 s, must be connected by its ramp deadline, holds,
// and is sampled at T + s span; span = 0.5 s + the ramp's deadline + --hold-s.
json::array run_idle_slice(Engine& engine, unsigned step_count, json::object& report, Progress& progress,
                           double& ramp_seconds) {
  const Options& options = engine.options();
  const double ahead_ms = reference_ahead_ms(options);  // this UNIX clock less the reference clock
  report["ready_at_unix_ms"] = unix_ms_now(ahead_ms);
  const bool measured = options.clock_offset_bound_ns > 0;
  report["clock"] = json::object{
      {"clock_offset_ms", options.clock_offset_ms},
      {"measured_offset_ns", measured ? json::value(options.clock_offset_ns) : json::value(nullptr)},
      {"measured_offset_bound_ns", measured ? json::value(options.clock_offset_bound_ns) : json::value(nullptr)}};
  const SliceSchedule at = slice_schedule(options, step_count, ahead_ms);
  auto late_ms = [](std::int64_t due_ns) {
    return std::round(static_cast<double>(to_ns(Clock::now()) - due_ns) / 1e5) / 10;
  };
  json::array steps;
  auto sample_at = [&](unsigned step, std::uint32_t target, json::object entry) {
    wait_until(
        from_ns(at.start_ns + step * at.span_ns), [] { return false; },
        [&] { progress.show("holding until step " + std::to_string(step) + "'s sample"); });
    entry["phase"] = step == 0 ? std::string("baseline") : "step " + std::to_string(step);
    entry["sample_at_unix_ms"] = options.start_at_ms + step * at.span_ns / 1'000'000;
    entry["target"] = target;
    entry["connected"] = engine.open_connections();
    steps.push_back(std::move(entry));
  };
  sample_at(0, 0, json::object{{"start_late_ms", late_ms(at.start_ns)}});
  for (unsigned step = 1; step <= step_count; ++step) {
    const std::uint32_t target = step_target(options, step, step_count);
    const std::int64_t ramp_start_ns = at.start_ns + (step - 1) * at.span_ns + at.lead_ns;
    const double start_late = late_ms(ramp_start_ns);
    wait_until(
        from_ns(ramp_start_ns), [] { return false; }, nullptr);
    ramp_seconds += ramp_step(engine, step, step_count, target, progress);
    // Connected after the ramp's deadline: the step's sample may have come before them.
    const double ready_late = late_ms(ramp_start_ns + at.ramp_ns);
    if (start_late > 1 || ready_late > 1)
      warn(report,
           "step " + std::to_string(step) + ": " +
               (start_late > 1 ? "started " + std::to_string(std::lround(start_late)) + " ms late"
                               : "connected " + std::to_string(std::lround(ready_late)) + " ms after its deadline") +
               " (--start-at): the server's sample may not hold all of this slice's clients");
    sample_at(step, target, json::object{{"start_late_ms", start_late}, {"ready_late_ms", ready_late}});
    if (engine.limit_hit()) break;
  }
  return steps;
}

}  // namespace

void run_idle(Engine& engine, json::object& report, Progress& progress) {
  const Options& options = engine.options();
  std::vector<MemorySample> steps;
  const auto cpu_start = CpuWindow::now(options.server_pid);
  sample_step(engine, steps, report);  // the baseline, before any client
  const unsigned step_count = std::max(1u, options.steps);
  double ramp_seconds = 0;
  if (sliced(options)) report["idle_steps"] = run_idle_slice(engine, step_count, report, progress, ramp_seconds);
  for (unsigned step = 1; step <= step_count && !sliced(options); ++step) {
    ramp_seconds += ramp_step(engine, step, step_count, step_target(options, step, step_count), progress);
    hold_until_settled(options);
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
    warn(report,
         std::to_string(closed) + " connections were closed by the server (or failed) during the ramp and holds");
  report["ramp"] = ramp_json(ramp_seconds, engine.open_connections());
  fill_cpu(report, cpu_start, CpuWindow::now(options.server_pid), options.server_pid);
  finish_common(engine, report);
  const auto client_end = measure_client_end(engine, steps);
  auto& memory = report["memory"].as_object();
  memory["client_end"] = client_end_json(client_end);
  memory["server_host"] = server_host_json(server_host(steps, client_end, kernel_stack_per_task()));
}

}  // namespace loadgen
