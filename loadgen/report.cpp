#include "report.hpp"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <boost/version.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "git_commit.hpp"  // generated at build time: CHATBENCH_GIT_COMMIT, CHATBENCH_GIT_DIRTY

namespace loadgen {

namespace json = boost::json;

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::idle:
      return "idle";
    case Mode::broadcast:
      return "broadcast";
    case Mode::chat:
      return "chat";
  }
  return "?";
}

namespace {

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

json::value number_or_null(const std::string& text) {
  try {
    return json::value(std::stoll(text));
  } catch (const std::exception&) {
    return nullptr;
  }
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// "Cpus_allowed_list" of a process: what it may run on, i.e. its pinning.
json::value cpus_allowed(pid_t pid) {
  std::ifstream in("/proc/" + (pid > 0 ? std::to_string(pid) : std::string("self")) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Cpus_allowed_list:", 0) == 0) return json::value(line.substr(line.find_first_not_of(" \t", 18)));
  return nullptr;
}

json::value server_fd_limit(pid_t pid) {
  if (pid <= 0) return nullptr;
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream fields(line.substr(14));
    std::string soft;
    fields >> soft;
    return number_or_null(soft);
  }
  return nullptr;
}

double round3(double x) { return std::round(x * 1000) / 1000; }

}  // namespace

json::object machine_info(pid_t server_pid) {
  utsname names{};
  uname(&names);
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  json::object limits{
      {"ulimit_n_soft", files.rlim_cur},
      {"ulimit_n_hard", files.rlim_max},
      {"server_ulimit_n", server_fd_limit(server_pid)},
      {"ip_local_port_range", first_line("/proc/sys/net/ipv4/ip_local_port_range")},
      {"pid_max", number_or_null(first_line("/proc/sys/kernel/pid_max"))},
      {"max_map_count", number_or_null(first_line("/proc/sys/vm/max_map_count"))},
      {"threads_max", number_or_null(first_line("/proc/sys/kernel/threads-max"))},
      {"somaxconn", number_or_null(first_line("/proc/sys/net/core/somaxconn"))},
  };
  return {
      {"hostname", names.nodename},
      {"cpu", cpu_model()},
      {"cores", std::thread::hardware_concurrency()},
      {"kernel", std::string(names.sysname) + " " + names.release + " " + names.machine},
      {"compiler", "g++ " __VERSION__},
      {"compiler_flags", CHATBENCH_CXX_FLAGS},
      {"build_type", CHATBENCH_BUILD_TYPE},
      {"boost", BOOST_LIB_VERSION},
      {"git_commit", CHATBENCH_GIT_COMMIT},
      {"git_dirty", CHATBENCH_GIT_DIRTY},
      {"limits", limits},
      {"pinning", json::object{{"loadgen_cpus", cpus_allowed(0)},
                               {"server_cpus", server_pid > 0 ? cpus_allowed(server_pid) : nullptr}}},
  };
}

json::object make_report_skeleton(const Options& options) {
  json::object report;
  report["mode"] = mode_name(options.mode);
  report["clients_requested"] = options.clients;
  report["clients_connected"] = 0;
  report["limit_hit"] = nullptr;
  report["machine"] = machine_info(options.server_pid);
  report["memory"] = json::object{
      {"steps", json::array{}},
      {"per_connection",
       json::object{{"rss_bytes", nullptr}, {"pss_bytes", nullptr}, {"vsz_bytes", nullptr}, {"system_bytes", nullptr}}},
      {"client_end", nullptr},
      {"server_host", nullptr},
  };
  report["latency_us"] = nullptr;
  report["latency_histogram"] = nullptr;
  report["lines"] = nullptr;
  report["throughput"] = nullptr;
  report["cpu"] = json::object{{"server_user_s", nullptr},
                               {"server_sys_s", nullptr},
                               {"loadgen_user_s", nullptr},
                               {"loadgen_sys_s", nullptr},
                               {"window_s", nullptr},
                               {"loadgen_saturated", nullptr},
                               {"loadgen_cpu_fraction", nullptr},
                               {"server_cpu_fraction", nullptr},
                               {"cores", nullptr}};
  report["ceiling"] = nullptr;  // chat --find-ceiling only
  report["broadcast_completion_us"] = nullptr;
  report["ramp"] = nullptr;
  report["server_stats"] = nullptr;
  report["warnings"] = json::array{};
  json::object opts{{"host", options.host},
                    {"port", options.port},
                    {"clients", options.clients},
                    {"server_pid", options.server_pid},
                    {"threads", options.threads},
                    {"connect_concurrency", options.connect_concurrency},
                    {"connect_rate", options.connect_rate},
                    {"source_ips", options.source_ips},
                    {"connect_timeout_s", options.connect_timeout_s},
                    {"drain_s", options.drain_s},
                    {"uring_buffers", options.uring_buffers},
                    {"tick_us", options.tick_us}};
  // Many hosts (docs/distributed.md): which slice of which run this process ran.
  opts["clients_total"] = options.clients_total;
  opts["client_offset"] = options.client_offset;
  opts["start_at_ms"] = options.start_at_ms;
  opts["clock_offset_ms"] = options.clock_offset_ms;
  report["slice"] = json::object{{"clients_total", options.clients_total > 0 ? options.clients_total : options.clients},
                                 {"client_offset", options.client_offset},
                                 {"clients", options.clients}};
  switch (options.mode) {
    case Mode::idle:
      opts["steps"] = options.steps;
      opts["hold_s"] = options.hold_s;
      break;
    case Mode::broadcast:
      opts["messages"] = options.messages;
      opts["interval_ms"] = options.interval_ms;
      opts["size"] = options.size;
      break;
    case Mode::chat: {
      opts["room_size"] = options.room_size;
      json::array rates;
      for (double r : options.rates) rates.push_back(r);
      opts["rate"] = rates;
      opts["duration_s"] = options.duration_s;
      opts["warmup_s"] = options.warmup_s;
      opts["size"] = options.size;
      opts["find_ceiling"] = options.find_ceiling;
      if (options.find_ceiling)
        opts["ceiling"] = json::object{{"growth", options.ceiling_growth},
                                       {"precision", options.ceiling_precision},
                                       {"max_steps", options.ceiling_max_steps},
                                       {"p99_bar_ms", options.p99_bar_ms},
                                       {"late_bar_pct", options.late_bar_pct}};
      break;
    }
  }
  report["options"] = opts;
  return report;
}

json::value latency_json(const LatencyRecorder& recorder) {
  if (recorder.count() == 0) return nullptr;
  auto us = [&](double q) { return round3(static_cast<double>(recorder.percentile(q)) / 1000.0); };
  return json::object{{"p50", us(0.50)},
                      {"p90", us(0.90)},
                      {"p99", us(0.99)},
                      {"p999", us(0.999)},
                      {"max", round3(static_cast<double>(recorder.max()) / 1000.0)},
                      {"count", recorder.count()}};
}

json::value histogram_json(const LatencyRecorder& recorder) {
  if (recorder.count() == 0) return nullptr;
  json::array buckets;
  for (const auto& [index, count] : recorder.nonempty_buckets()) buckets.push_back(json::array{index, count});
  return json::object{{"unit", "ns"},
                      {"sub_bucket_bits", LatencyRecorder::sub_bucket_bits},
                      {"count", recorder.count()},
                      {"max", recorder.max()},
                      {"buckets", std::move(buckets)}};
}

LatencyRecorder histogram_from_json(const json::value& histogram) {
  LatencyRecorder recorder;
  if (histogram.is_null()) return recorder;
  const json::object& h = histogram.as_object();
  if (h.at("unit").as_string() != "ns" || h.at("sub_bucket_bits").to_number<int>() != LatencyRecorder::sub_bucket_bits)
    throw std::runtime_error("latency histogram of another layout (unit or sub_bucket_bits differ)");
  for (const json::value& bucket : h.at("buckets").as_array()) {
    const json::array& pair = bucket.as_array();
    recorder.add_bucket(pair.at(0).to_number<std::size_t>(), pair.at(1).to_number<std::uint64_t>());
  }
  recorder.raise_max(h.at("max").to_number<std::int64_t>());
  if (recorder.count() != h.at("count").to_number<std::uint64_t>())
    throw std::runtime_error("latency histogram: its buckets add up to " + std::to_string(recorder.count()) +
                             ", not its count " + std::to_string(h.at("count").to_number<std::uint64_t>()));
  return recorder;
}

json::value completion_json(const BroadcastCompletion& completion) {
  const LatencyRecorder& latency = completion.latency;
  if (latency.count() == 0) return nullptr;
  auto us = [&](double q) { return std::round(static_cast<double>(latency.percentile(q))) / 1000.0; };
  return json::object{{"p50", us(0.5)},           {"p95", us(0.95)},
                      {"p99", us(0.99)},          {"max", static_cast<double>(latency.max()) / 1000.0},
                      {"count", latency.count()}, {"incomplete_messages", completion.incomplete}};
}

json::array cores_json(const std::vector<CoreBusy>& cores) {
  json::array out;
  auto r4 = [](double x) { return std::round(x * 1e4) / 1e4; };
  for (const CoreBusy& c : cores)
    out.push_back(json::object{{"cpu", c.cpu}, {"busy", r4(c.busy)}, {"steal", r4(c.steal)}});
  return out;
}

json::object memory_sample_json(const MemorySample& s) {
  return {{"clients", s.clients},
          {"rss_bytes", optional_json(s.rss_bytes)},
          {"pss_bytes", optional_json(s.pss_bytes)},
          {"anonymous_bytes", optional_json(s.anonymous_bytes)},
          {"vsz_bytes", optional_json(s.vsz_bytes)},
          {"threads", optional_json(s.threads)},
          {"mem_available_bytes", optional_json(s.mem_available_bytes)},
          {"kernel_stack_bytes", optional_json(s.kernel_stack_bytes)},
          {"slab_bytes", optional_json(s.slab_bytes)},
          {"sock_mem_bytes", optional_json(s.sock_mem_bytes)},
          {"pte_bytes", optional_json(s.pte_bytes)},
          {"mem_free_bytes", optional_json(s.mem_free_bytes)},
          {"page_cache_bytes", optional_json(s.page_cache_bytes)},
          {"per_cpu_free_bytes", optional_json(s.per_cpu_free_bytes)},
          {"anon_pages_bytes", optional_json(s.anon_pages_bytes)},
          {"page_tables_bytes", optional_json(s.page_tables_bytes)},
          {"slab_reclaimable_bytes", optional_json(s.slab_reclaimable_bytes)},
          {"loadgen_rss_bytes", optional_json(s.loadgen_rss_bytes)},
          {"loadgen_pte_bytes", optional_json(s.loadgen_pte_bytes)}};
}

json::object per_connection_json(const std::vector<MemorySample>& steps) {
  // The slope of one field over the steps that have it.
  auto slope = [&](auto field, double sign = 1.0) -> json::value {
    std::vector<double> x, y;
    for (const auto& s : steps) {
      const std::optional<std::uint64_t>& v = s.*field;
      if (!v) continue;
      x.push_back(static_cast<double>(s.clients));
      y.push_back(sign * static_cast<double>(*v));
    }
    const auto b = least_squares_slope(x, y);
    return b ? json::value(std::round(*b)) : json::value(nullptr);
  };
  return {{"rss_bytes", slope(&MemorySample::rss_bytes)},
          {"pss_bytes", slope(&MemorySample::pss_bytes)},
          {"anonymous_bytes", slope(&MemorySample::anonymous_bytes)},
          {"vsz_bytes", slope(&MemorySample::vsz_bytes)},
          {"threads", slope(&MemorySample::threads)},
          // The whole machine: what MemAvailable lost per connection (so the sign flips).
          {"system_bytes", slope(&MemorySample::mem_available_bytes, -1.0)},
          {"kernel_stack_bytes", slope(&MemorySample::kernel_stack_bytes)},
          {"slab_bytes", slope(&MemorySample::slab_bytes)},
          {"sock_mem_bytes", slope(&MemorySample::sock_mem_bytes)},
          {"pte_bytes", slope(&MemorySample::pte_bytes)},
          {"mem_free_drop_bytes", slope(&MemorySample::mem_free_bytes, -1.0)},
          {"anon_pages_bytes", slope(&MemorySample::anon_pages_bytes)},
          {"page_tables_bytes", slope(&MemorySample::page_tables_bytes)},
          {"slab_reclaimable_bytes", slope(&MemorySample::slab_reclaimable_bytes)},
          {"loadgen_rss_bytes", slope(&MemorySample::loadgen_rss_bytes)},
          {"loadgen_pte_bytes", slope(&MemorySample::loadgen_pte_bytes)}};
}

namespace {

// Least-squares slope over the steps of any reading; nullopt where fewer than two steps have it.
template <class Reading>
std::optional<double> slope_over(const std::vector<MemorySample>& steps, Reading reading) {
  std::vector<double> x, y;
  for (const auto& s : steps) {
    const std::optional<double> v = reading(s);
    if (!v) continue;
    x.push_back(static_cast<double>(s.clients));
    y.push_back(*v);
  }
  return least_squares_slope(x, y);
}

std::optional<double> as_double(const std::optional<std::uint64_t>& v) {
  return v ? std::optional<double>(static_cast<double>(*v)) : std::nullopt;
}

// The caches that make up a TCP socket's kernel side: the sock, its inode, the dentry and
// file of its descriptor, its buffers, its port binding. Everything else is "other".
bool socket_cache(const std::string& name) {
  return name == "TCP" || name == "TCPv6" || name == "sock_inode_cache" || name == "dentry" || name == "filp" ||
         name.starts_with("skbuff_") || name.starts_with("tcp_bind");
}

json::value rounded(std::optional<double> v) { return v ? json::value(std::round(*v)) : json::value(nullptr); }

}  // namespace

json::value client_end_json(const std::optional<ClientEnd>& client_end) {
  if (!client_end || client_end->connections == 0) return nullptr;
  const auto n = static_cast<double>(client_end->connections);
  json::object caches;
  double total = 0;
  for (const auto& [name, bytes] : client_end->dropped_bytes) {
    total += static_cast<double>(bytes) / n;
    if (static_cast<double>(bytes) / n >= 1.0) caches[name] = std::round(static_cast<double>(bytes) / n);
  }
  return json::object{{"method", "server stopped (SIGSTOP), loadgen's sockets reset, slab drop read, server continued"},
                      {"connections", client_end->connections},
                      {"settle_s", round3(client_end->settle_s)},
                      {"bytes", std::round(total)},
                      {"caches", caches}};
}

json::object server_host_json(const std::vector<MemorySample>& steps, const std::optional<ClientEnd>& client_end,
                              std::optional<std::uint64_t> stack_per_task) {
  json::object out;
  json::array flags;
  const bool have_slabs = !steps.empty() && !steps.front().slab_caches.empty() && !steps.back().slab_caches.empty();
  const bool have_client = client_end && client_end->connections > 0;
  const double n = have_client ? static_cast<double>(client_end->connections) : 1.0;

  const auto rss = slope_over(steps, [](const MemorySample& s) { return as_double(s.rss_bytes); });
  const auto pte = slope_over(steps, [](const MemorySample& s) { return as_double(s.pte_bytes); });
  const auto threads = slope_over(steps, [](const MemorySample& s) { return as_double(s.threads); });
  std::optional<double> kernel_stack;
  if (threads && stack_per_task) kernel_stack = *threads * static_cast<double>(*stack_per_task);

  // Per cache: the slope over the steps (both ends), less the client's end measured apart.
  std::map<std::string, double> server_caches;
  double client_total = 0;
  if (have_slabs) {
    std::set<std::string> names;
    for (const auto& s : steps)
      for (const auto& entry : s.slab_caches) names.insert(entry.first);
    for (const auto& name : names) {
      const auto total = slope_over(steps, [&](const MemorySample& s) -> std::optional<double> {
        if (s.slab_caches.empty()) return std::nullopt;
        const auto it = s.slab_caches.find(name);
        return it == s.slab_caches.end() ? 0.0 : static_cast<double>(it->second);
      });
      double client = 0;
      if (have_client) {
        const auto it = client_end->dropped_bytes.find(name);
        if (it != client_end->dropped_bytes.end()) client = static_cast<double>(it->second) / n;
      }
      client_total += client;
      if (total) server_caches[name] = *total - client;
    }
  }
  double socket = 0, other = 0, reclaimable = 0;
  json::object socket_caches, other_caches;
  for (const auto& [name, bytes] : server_caches) {
    (socket_cache(name) ? socket : other) += bytes;
    if (slab_cache_reclaimable(name)) reclaimable += bytes;
    // Caches that moved by less than a byte per connection are noise; they still count in the sums.
    if (std::abs(bytes) >= 1.0) (socket_cache(name) ? socket_caches : other_caches)[name] = std::round(bytes);
  }

  // The whole, of the same scope as the parts: the machine's figures less the client's end
  // in the kernel and loadgen's own growth (its RSS and page tables).
  const auto loadgen = slope_over(steps, [](const MemorySample& s) -> std::optional<double> {
    if (!s.loadgen_rss_bytes) return std::nullopt;
    return static_cast<double>(*s.loadgen_rss_bytes + s.loadgen_pte_bytes.value_or(0));
  });
  const double client_side = client_total + loadgen.value_or(0);
  // Free memory: MemFree plus the free pages parked in the per-CPU lists (MemFree leaves
  // them out, and they swing by tens of MB within seconds of a ramp or a teardown), less
  // the page cache's changes: file pages the kernel drops or reads in for reasons of its
  // own (writeback, another process, proactive reclaim), none of them a connection's.
  const auto free_drop = slope_over(steps, [](const MemorySample& s) -> std::optional<double> {
    if (!s.mem_free_bytes || !s.per_cpu_free_bytes || !s.page_cache_bytes) return std::nullopt;
    return static_cast<double>(*s.mem_free_bytes + *s.per_cpu_free_bytes + *s.page_cache_bytes);
  });
  const auto per_cpu_free = slope_over(steps, [](const MemorySample& s) { return as_double(s.per_cpu_free_bytes); });
  const auto page_cache = slope_over(steps, [](const MemorySample& s) { return as_double(s.page_cache_bytes); });
  const auto meminfo_sum = slope_over(steps, [](const MemorySample& s) -> std::optional<double> {
    if (!s.anon_pages_bytes || !s.slab_bytes || !s.kernel_stack_bytes || !s.page_tables_bytes) return std::nullopt;
    return static_cast<double>(*s.anon_pages_bytes + *s.slab_bytes + *s.kernel_stack_bytes + *s.page_tables_bytes);
  });
  const auto available_drop = slope_over(steps, [](const MemorySample& s) { return as_double(s.mem_available_bytes); });
  std::optional<double> whole, whole_sum, available;
  if (free_drop) whole = -*free_drop - client_side;
  if (meminfo_sum) whole_sum = *meminfo_sum - client_side;
  if (available_drop) available = -*available_drop - client_side;

  std::optional<double> parts;
  if (rss && have_slabs) parts = *rss + pte.value_or(0) + kernel_stack.value_or(0) + socket + other;
  std::optional<double> disagreement;
  if (parts && whole && *whole > 0) disagreement = std::abs(*parts - *whole) / *whole;

  if (!have_slabs) flags.push_back(json::value("/proc/slabinfo unreadable (not root): no kernel parts"));
  if (!have_client) flags.push_back(json::value("client end not measured (needs --server-pid and /proc/slabinfo)"));
  if (!kernel_stack) flags.push_back(json::value("kernel stack size unknown"));
  if (whole && rss && *whole < *rss) flags.push_back(json::value("the whole is smaller than the server's own RSS"));
  if (disagreement && *disagreement > 0.2) {
    char text[96];
    std::snprintf(text, sizeof text, "parts and whole disagree by %.0f%% (more than 20%%)", *disagreement * 100);
    flags.push_back(json::value(text));
  }

  out["rss_bytes"] = rounded(rss);
  out["pte_bytes"] = rounded(pte);
  out["threads"] = threads ? json::value(round3(*threads)) : json::value(nullptr);
  out["stack_per_thread_bytes"] = optional_json(stack_per_task);
  out["kernel_stack_bytes"] = rounded(kernel_stack);
  out["socket_bytes"] = have_slabs ? json::value(std::round(socket)) : json::value(nullptr);
  out["socket_caches"] = socket_caches;
  out["other_kernel_bytes"] = have_slabs ? json::value(std::round(other)) : json::value(nullptr);
  out["other_caches"] = other_caches;
  out["reclaimable_slab_bytes"] = have_slabs ? json::value(std::round(reclaimable)) : json::value(nullptr);
  out["parts_bytes"] = rounded(parts);
  out["whole_bytes"] = rounded(whole);
  out["whole_meminfo_bytes"] = rounded(whole_sum);
  out["page_cache_bytes"] = rounded(page_cache);
  out["per_cpu_free_bytes"] = rounded(per_cpu_free);
  out["mem_available_bytes"] = rounded(available);
  out["client_end_bytes"] = have_client ? json::value(std::round(client_total)) : json::value(nullptr);
  out["loadgen_bytes"] = rounded(loadgen);
  out["disagreement"] = disagreement ? json::value(round3(*disagreement)) : json::value(nullptr);
  out["flags"] = flags;
  return out;
}

void write_json_file(const std::string& path, const json::object& report) {
  std::ofstream out(path);
  out << json::serialize(report) << '\n';
  if (!out) throw std::runtime_error("cannot write " + path);
}

namespace {

std::string show(const json::value& v) {
  if (v.is_null()) return "-";
  if (v.is_double()) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", v.as_double());
    return text;
  }
  if (v.is_string()) return std::string(v.as_string());
  return json::serialize(v);
}

const json::value& at(const json::object& o, std::initializer_list<const char*> path) {
  static const json::value null_value;
  const json::object* obj = &o;
  const json::value* v = &null_value;
  for (const char* key : path) {
    if (!obj) return null_value;
    const auto it = obj->find(key);
    if (it == obj->end()) return null_value;
    v = &it->value();
    obj = v->is_object() ? &v->as_object() : nullptr;
  }
  return *v;
}

}  // namespace

std::string human_summary(const json::object& r) {
  std::ostringstream out;
  out << "loadgen " << show(r.at("mode")) << ": " << show(r.at("clients_connected")) << "/"
      << show(r.at("clients_requested")) << " clients connected";
  if (!r.at("limit_hit").is_null()) out << ", limit hit: " << show(r.at("limit_hit"));
  out << "\n";
  if (!at(r, {"ramp"}).is_null())
    out << "  ramp: " << show(at(r, {"ramp", "seconds"})) << " s, " << show(at(r, {"ramp", "connects_per_s"}))
        << " connects/s\n";
  // A merged idle run: each step's connections over every host.
  if (const auto* steps = r.contains("idle_steps") ? r.at("idle_steps").if_array() : nullptr) {
    out << "  steps, connected:";
    for (const auto& step : *steps) out << " " << show(at(step.as_object(), {"connected"}));
    out << "\n";
  }
  const auto& pc = at(r, {"memory", "per_connection"});
  if (!at(pc.as_object(), {"rss_bytes"}).is_null() || !at(pc.as_object(), {"system_bytes"}).is_null())
    out << "  memory per connection: rss " << show(at(r, {"memory", "per_connection", "rss_bytes"})) << " B, pss "
        << show(at(r, {"memory", "per_connection", "pss_bytes"})) << " B, vsz "
        << show(at(r, {"memory", "per_connection", "vsz_bytes"})) << " B, system "
        << show(at(r, {"memory", "per_connection", "system_bytes"})) << " B\n";
  if (!at(r, {"memory", "server_host"}).is_null()) {
    const auto& host = at(r, {"memory", "server_host"}).as_object();
    out << "  server host per connection: parts " << show(at(host, {"parts_bytes"})) << " B (rss "
        << show(at(host, {"rss_bytes"})) << ", page tables " << show(at(host, {"pte_bytes"})) << ", kernel stacks "
        << show(at(host, {"kernel_stack_bytes"})) << ", sockets " << show(at(host, {"socket_bytes"}))
        << ", other kernel " << show(at(host, {"other_kernel_bytes"})) << "), whole " << show(at(host, {"whole_bytes"}))
        << " B; client end " << show(at(host, {"client_end_bytes"})) << " B\n";
    for (const auto& flag : at(host, {"flags"}).as_array()) out << "  memory flag: " << show(flag) << "\n";
  }
  if (!r.at("latency_us").is_null())
    out << "  latency us: p50 " << show(at(r, {"latency_us", "p50"})) << "  p90 " << show(at(r, {"latency_us", "p90"}))
        << "  p99 " << show(at(r, {"latency_us", "p99"})) << "  p99.9 " << show(at(r, {"latency_us", "p999"}))
        << "  max " << show(at(r, {"latency_us", "max"})) << "  (" << show(at(r, {"latency_us", "count"}))
        << " samples)\n";
  // Samples between hosts carry the clock measurements' error: say so beside the figure.
  if (const auto* clock = r.contains("clock") ? r.at("clock").if_object() : nullptr) {
    const json::value* cross = clock->if_contains("cross_slice_samples");
    if (cross && !cross->is_null() && cross->to_number<std::uint64_t>() > 0) {
      const json::value* bound = clock->if_contains("cross_slice_error_bound_us");
      out << "  of which " << show(*cross) << " between hosts, each within "
          << (bound && !bound->is_null() ? show(*bound) + " us (the two hosts' clock bounds)"
                                         : std::string("its two hosts' clock bounds"))
          << "\n";
    }
  }
  if (!r.at("broadcast_completion_us").is_null())
    out << "  broadcast completion us: p50 " << show(at(r, {"broadcast_completion_us", "p50"})) << "  p95 "
        << show(at(r, {"broadcast_completion_us", "p95"})) << "  p99 "
        << show(at(r, {"broadcast_completion_us", "p99"})) << "  max "
        << show(at(r, {"broadcast_completion_us", "max"})) << "\n";
  if (!r.at("lines").is_null())
    out << "  lines: sent " << show(at(r, {"lines", "sent"})) << ", delivered " << show(at(r, {"lines", "delivered"}))
        << " of " << show(at(r, {"lines", "expected"})) << ", lost " << show(at(r, {"lines", "lost"}))
        << ", outstanding at the deadline " << show(at(r, {"lines", "outstanding"})) << ", duplicated "
        << show(at(r, {"lines", "duplicated"})) << ", reordered " << show(at(r, {"lines", "reordered"}))
        << ", server lines_out " << show(at(r, {"lines", "server_lines_out"})) << "\n";
  if (!r.at("throughput").is_null())
    out << "  throughput: " << show(at(r, {"throughput", "sent_per_s"})) << " sent/s, "
        << show(at(r, {"throughput", "deliveries_per_s"})) << " deliveries/s (by arrival time)\n";
  out << "  cpu s: server user " << show(at(r, {"cpu", "server_user_s"})) << " sys "
      << show(at(r, {"cpu", "server_sys_s"})) << ", loadgen user " << show(at(r, {"cpu", "loadgen_user_s"})) << " sys "
      << show(at(r, {"cpu", "loadgen_sys_s"})) << " over " << show(at(r, {"cpu", "window_s"})) << " s\n";
  if (const auto& c = at(r, {"ceiling"}); !c.is_null()) {
    out << "  ceiling: ";
    if (at(c.as_object(), {"rate_per_client"}).is_null())
      out << "no rate passed";
    else
      out << show(at(c.as_object(), {"deliveries_per_s"})) << " deliveries/s at "
          << show(at(c.as_object(), {"rate_per_client"})) << " lines/s per client, p99 "
          << show(at(c.as_object(), {"p99_us"})) << " us";
    if (!at(c.as_object(), {"limited_by"}).is_null())
      out << ", limited by " << show(at(c.as_object(), {"limited_by"}));
    else
      out << (at(c.as_object(), {"server_died"}).as_bool() ? ", cut short: the server died"
                                                           : ", no rate failed within the step budget");
    if (at(c.as_object(), {"lower_bound"}).as_bool()) out << " (a lower bound, not the server's ceiling)";
    out << ", " << at(c.as_object(), {"steps"}).as_array().size() << " steps\n";
  }
  for (const auto& w : r.at("warnings").as_array()) out << "  warning: " << show(w) << "\n";
  return out.str();
}

Progress::Progress(bool quiet) : enabled_(!quiet && isatty(STDOUT_FILENO)) {}

void Progress::show(const std::string& text) {
  if (!enabled_) return;
  const auto now = Clock::now();
  if (shown_ && now - last_ < std::chrono::milliseconds(250)) return;
  last_ = now;
  shown_ = true;
  std::printf("\r\033[K%s", text.c_str());
  std::fflush(stdout);
}

void Progress::finish() {
  if (enabled_ && shown_) std::printf("\r\033[K");
  std::fflush(stdout);
  shown_ = false;
}

}  // namespace loadgen
