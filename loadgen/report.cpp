#include "report.hpp"

#include <boost/version.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <thread>
#include <unistd.h>

#include "git_commit.hpp"  // generated at build time: CHATBENCH_GIT_COMMIT, CHATBENCH_GIT_DIRTY

namespace loadgen {

namespace json = boost::json;

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::idle: return "idle";
    case Mode::broadcast: return "broadcast";
    case Mode::chat: return "chat";
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
      {"pinning", json::object{{"loadgen_cpus", cpus_allowed(0)}, {"server_cpus", server_pid > 0 ? cpus_allowed(server_pid) : nullptr}}},
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
      {"per_connection", json::object{{"rss_bytes", nullptr}, {"pss_bytes", nullptr}, {"vsz_bytes", nullptr}, {"system_bytes", nullptr}}},
  };
  report["latency_us"] = nullptr;
  report["lines"] = nullptr;
  report["throughput"] = nullptr;
  report["cpu"] = json::object{{"server_user_s", nullptr}, {"server_sys_s", nullptr}, {"loadgen_user_s", nullptr},
                               {"loadgen_sys_s", nullptr}, {"window_s", nullptr}, {"loadgen_saturated", nullptr},
                               {"loadgen_cpu_fraction", nullptr}, {"server_cpu_fraction", nullptr}, {"cores", nullptr}};
  report["ceiling"] = nullptr;  // chat --find-ceiling only
  report["broadcast_completion_us"] = nullptr;
  report["ramp"] = nullptr;
  report["server_stats"] = nullptr;
  report["warnings"] = json::array{};
  json::object opts{{"host", options.host}, {"port", options.port}, {"clients", options.clients},
                    {"server_pid", options.server_pid}, {"threads", options.threads},
                    {"connect_concurrency", options.connect_concurrency}, {"source_ips", options.source_ips},
                    {"connect_timeout_s", options.connect_timeout_s}, {"drain_s", options.drain_s}};
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
        opts["ceiling"] = json::object{{"growth", options.ceiling_growth}, {"precision", options.ceiling_precision},
                                       {"max_steps", options.ceiling_max_steps}, {"p99_bar_ms", options.p99_bar_ms},
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
  return json::object{{"p50", us(0.50)}, {"p90", us(0.90)}, {"p99", us(0.99)}, {"p999", us(0.999)},
                      {"max", round3(static_cast<double>(recorder.max()) / 1000.0)}, {"count", recorder.count()}};
}

json::array cores_json(const std::vector<CoreBusy>& cores) {
  json::array out;
  auto r4 = [](double x) { return std::round(x * 1e4) / 1e4; };
  for (const CoreBusy& c : cores)
    out.push_back(json::object{{"cpu", c.cpu}, {"busy", r4(c.busy)}, {"softirq", r4(c.softirq)}, {"steal", r4(c.steal)}});
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
          {"sock_mem_bytes", optional_json(s.sock_mem_bytes)}};
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
          {"sock_mem_bytes", slope(&MemorySample::sock_mem_bytes)}};
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
  out << "loadgen " << show(r.at("mode")) << ": " << show(r.at("clients_connected")) << "/" << show(r.at("clients_requested"))
      << " clients connected";
  if (!r.at("limit_hit").is_null()) out << ", limit hit: " << show(r.at("limit_hit"));
  out << "\n";
  if (!at(r, {"ramp"}).is_null())
    out << "  ramp: " << show(at(r, {"ramp", "seconds"})) << " s, " << show(at(r, {"ramp", "connects_per_s"})) << " connects/s\n";
  const auto& pc = at(r, {"memory", "per_connection"});
  if (!at(pc.as_object(), {"rss_bytes"}).is_null() || !at(pc.as_object(), {"system_bytes"}).is_null())
    out << "  memory per connection: rss " << show(at(r, {"memory", "per_connection", "rss_bytes"})) << " B, pss "
        << show(at(r, {"memory", "per_connection", "pss_bytes"})) << " B, vsz "
        << show(at(r, {"memory", "per_connection", "vsz_bytes"})) << " B, system "
        << show(at(r, {"memory", "per_connection", "system_bytes"})) << " B\n";
  if (!r.at("latency_us").is_null())
    out << "  latency us: p50 " << show(at(r, {"latency_us", "p50"})) << "  p90 " << show(at(r, {"latency_us", "p90"}))
        << "  p99 " << show(at(r, {"latency_us", "p99"})) << "  p99.9 " << show(at(r, {"latency_us", "p999"})) << "  max "
        << show(at(r, {"latency_us", "max"})) << "  (" << show(at(r, {"latency_us", "count"})) << " samples)\n";
  if (!r.at("broadcast_completion_us").is_null())
    out << "  broadcast completion us: p50 " << show(at(r, {"broadcast_completion_us", "p50"})) << "  p95 "
        << show(at(r, {"broadcast_completion_us", "p95"})) << "  p99 " << show(at(r, {"broadcast_completion_us", "p99"}))
        << "  max " << show(at(r, {"broadcast_completion_us", "max"})) << "\n";
  if (!r.at("lines").is_null())
    out << "  lines: sent " << show(at(r, {"lines", "sent"})) << ", delivered " << show(at(r, {"lines", "delivered"}))
        << " of " << show(at(r, {"lines", "expected"})) << ", lost " << show(at(r, {"lines", "lost"}))
        << ", outstanding at the deadline " << show(at(r, {"lines", "outstanding"})) << ", duplicated "
        << show(at(r, {"lines", "duplicated"})) << ", reordered " << show(at(r, {"lines", "reordered"}))
        << ", server lines_out " << show(at(r, {"lines", "server_lines_out"})) << "\n";
  if (!r.at("throughput").is_null())
    out << "  throughput: " << show(at(r, {"throughput", "sent_per_s"})) << " sent/s, "
        << show(at(r, {"throughput", "deliveries_per_s"})) << " deliveries/s (by arrival time)\n";
  out << "  cpu s: server user " << show(at(r, {"cpu", "server_user_s"})) << " sys " << show(at(r, {"cpu", "server_sys_s"}))
      << ", loadgen user " << show(at(r, {"cpu", "loadgen_user_s"})) << " sys " << show(at(r, {"cpu", "loadgen_sys_s"}))
      << " over " << show(at(r, {"cpu", "window_s"})) << " s\n";
  if (const auto& c = at(r, {"ceiling"}); !c.is_null()) {
    out << "  ceiling: ";
    if (at(c.as_object(), {"rate_per_client"}).is_null())
      out << "no rate passed";
    else
      out << show(at(c.as_object(), {"deliveries_per_s"})) << " deliveries/s at " << show(at(c.as_object(), {"rate_per_client"}))
          << " lines/s per client, p99 " << show(at(c.as_object(), {"p99_us"})) << " us";
    if (!at(c.as_object(), {"limited_by"}).is_null())
      out << ", limited by " << show(at(c.as_object(), {"limited_by"}));
    else
      out << (at(c.as_object(), {"server_died"}).as_bool() ? ", cut short: the server died" : ", no rate failed within the step budget");
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
