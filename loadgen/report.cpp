#include "report.hpp"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <boost/version.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "git_commit.hpp"  // generated at build time: CHATBENCH_GIT_COMMIT, CHATBENCH_GIT_DIRTY
#include "wire.hpp"

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

namespace {

// The report's "options": the command line as parsed, common options first.
json::object options_json(const Options& options) {
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
                    {"protocol", protocol_name(options.protocol)},
                    {"tick_us", options.tick_us}};
  // Many hosts (docs/distributed.md): which slice of which run this process ran.
  opts["clients_total"] = options.clients_total;
  opts["client_offset"] = options.client_offset;
  opts["start_at_ms"] = options.start_at_ms;
  opts["clock_offset_ms"] = options.clock_offset_ms;
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
      opts["server_cgroup"] = options.server_cgroup;
      if (options.find_ceiling)
        opts["ceiling"] = json::object{{"growth", options.ceiling_growth},
                                       {"precision", options.ceiling_precision},
                                       {"max_steps", options.ceiling_max_steps},
                                       {"p99_bar_ms", options.p99_bar_ms},
                                       {"late_bar_pct", options.late_bar_pct}};
      break;
    }
  }
  return opts;
}

}  // namespace

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
                               {"server_cgroup", nullptr},
                               {"cores", nullptr}};
  report["ceiling"] = nullptr;  // chat --find-ceiling only
  report["broadcast_completion_us"] = nullptr;
  report["ramp"] = nullptr;
  report["server_stats"] = nullptr;
  report["warnings"] = json::array{};
  report["slice"] = json::object{{"clients_total", options.clients_total > 0 ? options.clients_total : options.clients},
                                 {"client_offset", options.client_offset},
                                 {"clients", options.clients}};
  report["options"] = options_json(options);
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

json::object throttling_json(const CgroupThrottling& t) {
  return {{"periods", t.periods},
          {"throttled_periods", t.throttled_periods},
          {"throttled_s", std::round(t.throttled_s * 1e6) / 1e6},
          {"quota_cores", optional_json(t.quota_cores)},
          {"period_us", t.period_us}};
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

json::object server_host_json(const ServerHost& host) {
  // Caches that moved by less than a byte per connection are noise; they still count in the sums.
  auto moved = [](const std::map<std::string, double>& caches) {
    json::object out;
    for (const auto& [name, bytes] : caches)
      if (std::abs(bytes) >= 1.0) out[name] = std::round(bytes);
    return out;
  };
  auto if_slabs = [&](double bytes) { return host.have_slabs ? json::value(std::round(bytes)) : json::value(nullptr); };
  json::array flags;
  for (const auto& flag : host.flags) flags.push_back(json::value(flag));
  return {{"rss_bytes", rounded(host.rss)},
          {"pte_bytes", rounded(host.pte)},
          {"threads", host.threads ? json::value(round3(*host.threads)) : json::value(nullptr)},
          {"stack_per_thread_bytes", optional_json(host.stack_per_thread)},
          {"kernel_stack_bytes", rounded(host.kernel_stack)},
          {"socket_bytes", if_slabs(host.socket)},
          {"socket_caches", moved(host.socket_caches)},
          {"other_kernel_bytes", if_slabs(host.other)},
          {"other_caches", moved(host.other_caches)},
          {"reclaimable_slab_bytes", if_slabs(host.reclaimable)},
          {"parts_bytes", rounded(host.parts)},
          {"whole_bytes", rounded(host.whole)},
          {"whole_meminfo_bytes", rounded(host.whole_meminfo)},
          {"page_cache_bytes", rounded(host.page_cache)},
          {"per_cpu_free_bytes", rounded(host.per_cpu_free)},
          {"slab_slack_used_bytes", rounded(host.slab_slack_used)},
          {"whole_resolution_bytes", rounded(host.whole_resolution)},
          {"within_resolution", host.within_resolution},
          {"mem_available_bytes", rounded(host.mem_available)},
          {"client_end_bytes", host.have_client ? json::value(std::round(host.client_end)) : json::value(nullptr)},
          {"loadgen_bytes", rounded(host.loadgen)},
          {"disagreement", host.disagreement ? json::value(round3(*host.disagreement)) : json::value(nullptr)},
          {"flags", std::move(flags)}};
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

namespace {

// The summary's lines, section by section, each only when the report has the figures.
void summarize_memory(std::ostream& out, const json::object& r) {
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
}

void summarize_latency(std::ostream& out, const json::object& r) {
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
}

void summarize_traffic(std::ostream& out, const json::object& r) {
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
}

void summarize_ceiling(std::ostream& out, const json::object& c) {
  out << "  ceiling: ";
  if (at(c, {"rate_per_client"}).is_null())
    out << "no rate passed";
  else
    out << show(at(c, {"deliveries_per_s"})) << " deliveries/s at " << show(at(c, {"rate_per_client"}))
        << " lines/s per client, p99 " << show(at(c, {"p99_us"})) << " us";
  if (!at(c, {"limited_by"}).is_null())
    out << ", limited by " << show(at(c, {"limited_by"}));
  else
    out << (at(c, {"server_died"}).as_bool() ? ", cut short: the server died"
                                             : ", no rate failed within the step budget");
  if (at(c, {"lower_bound"}).as_bool()) out << " (a lower bound, not the server's ceiling)";
  out << ", " << at(c, {"steps"}).as_array().size() << " steps\n";
  if (const auto& per_core = at(c, {"deliveries_per_server_core_s"}); !per_core.is_null())
    out << "  per server core: " << show(per_core) << " deliveries/s per core-second the server used ("
        << show(at(c, {"server_cores"})) << " cores' worth at the ceiling)\n";
  else
    out << "  per server core: withheld, " << show(at(c, {"deliveries_per_server_core_s_withheld"})) << "\n";
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
  summarize_memory(out, r);
  summarize_latency(out, r);
  summarize_traffic(out, r);
  if (const auto& c = at(r, {"ceiling"}); !c.is_null()) summarize_ceiling(out, c.as_object());
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
