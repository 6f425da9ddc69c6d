// idle mode (SPEC §3): ramp in --steps, memory per connection at each step, and the
// client's end of the connections measured at the end.
#include <algorithm>
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

}  // namespace

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

}  // namespace loadgen
