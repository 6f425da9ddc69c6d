// loadgen: drives a chat server (docs/protocol.md), or a broker in its own protocol, and
// reports what it measured (docs/loadgen.md).
#include <arpa/inet.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chatbench/cli.hpp>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

#include "engine.hpp"
#include "merge.hpp"
#include "report.hpp"
#include "scenarios.hpp"
#include "wire.hpp"

namespace {

using namespace loadgen;

namespace cli = chatbench::cli;

// Exit statuses of a run that wrote its report (docs/exit-status.md).
constexpr int exit_usage = 2;             // also cli::parse's status
constexpr int exit_no_client = 3;         // not one client connected: the report measured nothing
constexpr int exit_server_died = 4;       // during a --find-ceiling search
constexpr int exit_merge_refused = 5;     // loadgen merge: the reports are not slices of one run
constexpr int exit_merge_incomplete = 6;  // loadgen merge: written, but some clients are in no report

// --server-pid: a process there is to sample.
const CLI::Validator running_process(
    [](std::string& pid) {
      return std::filesystem::exists("/proc/" + pid) ? std::string() : "no process " + pid + " (no /proc/" + pid + ")";
    },
    "running");

// --json: a file in a directory there is, so that a long run is not lost at the end.
const CLI::Validator writable_path(
    [](std::string& path) {
      const auto parent = std::filesystem::path(path).parent_path();
      return parent.empty() || std::filesystem::is_directory(parent) ? std::string()
                                                                     : "no directory " + parent.string();
    },
    "");

// --source-ips: A.B.C.D or A.B.C.D-A.B.C.E, first <= last, at most 65536 addresses.
const CLI::Validator address_range(
    [](std::string& text) {
      const auto dash = text.find('-');
      in_addr first{}, last{};
      if (inet_pton(AF_INET, text.substr(0, dash).c_str(), &first) == 1 &&
          inet_pton(AF_INET, dash == std::string::npos ? text.c_str() : text.substr(dash + 1).c_str(), &last) == 1 &&
          ntohl(first.s_addr) <= ntohl(last.s_addr) && ntohl(last.s_addr) - ntohl(first.s_addr) < 65536) {
        return std::string();
      }
      return "'" + text + "' is not an IPv4 address or a range of up to 65536 of them (e.g. 127.0.0.1-127.0.0.8)";
    },
    "A.B.C.D[-A.B.C.E]");

// --server-cgroup: a directory of a cgroup with the CPU controller (cpu.stat and a quota file).
const CLI::Validator cpu_cgroup(
    [](std::string& dir) {
      return read_cgroup_cpu(dir) ? std::string()
                                  : "'" + dir +
                                        "' is not a cgroup of the CPU controller (no cpu.stat with "
                                        "cpu.max or cpu.cfs_quota_us)";
    },
    "DIR");

// Ceilings far above any use, low enough that no count or deadline overflows.
constexpr std::int64_t most_clients = 1'000'000;
constexpr double most_seconds = 86'400;  // a day

void add_common_options(CLI::App& command, Options& o) {
  command.add_option("--host", o.host, "server IPv4 address")->capture_default_str()->check(cli::ip_address(false));
  command.add_option("--port", o.port, "server port")->capture_default_str()->check(cli::integer(1, 65535));
  command.add_option("--clients", o.clients, "connections to open")
      ->capture_default_str()
      ->check(cli::integer(1, most_clients));
  command.add_option("--server-pid", o.server_pid, "server process to sample (/proc/PID)")
      ->check(cli::integer(1, 1 << 22))
      ->check(running_process);
  command.add_option("--json", o.json_path, "write the JSON report to this file")->check(writable_path);
  command.add_option("--threads", o.threads, "worker threads, each with its own connections")
      ->capture_default_str()
      ->check(cli::integer(1, 256));
  command.add_option("--connect-concurrency", o.connect_concurrency, "connects in flight at once")
      ->capture_default_str()
      ->check(cli::integer(1, 100000));
  command
      .add_option("--connect-rate", o.connect_rate,
                  "connects started per second (0: no limit); paces a server that accepts slowly")
      ->capture_default_str()
      ->check(cli::number(0, true, 1e7));
  command
      .add_option("--source-ips", o.source_ips, "source addresses, e.g. 127.0.0.1-127.0.0.8, spread over connections")
      ->check(address_range);
  command.add_option("--connect-timeout-s", o.connect_timeout_s, "deadline of each connect or join phase")
      ->capture_default_str()
      ->check(cli::number(0, false, most_seconds));
  command.add_option("--drain-s", o.drain_s, "deadline for lines still in flight after sending stops")
      ->capture_default_str()
      ->check(cli::number(0, true, most_seconds));
  command.add_flag("--quiet", o.quiet, "no progress line");
  command
      .add_option_function<std::string>(
          "--engine",
          [&o](const std::string& name) { o.engine = name == "uring" ? EngineKind::uring : EngineKind::epoll; },
          "I/O engine: uring or epoll (default: uring where the kernel allows it, else epoll)")
      ->check(CLI::IsMember({"uring", "epoll"}));
  command
      .add_option_function<std::string>(
          "--protocol",
          [&o](const std::string& name) {
            for (const Protocol protocol : {Protocol::chat, Protocol::nats, Protocol::redis, Protocol::mqtt})
              if (name == protocol_name(protocol)) o.protocol = protocol;
          },
          "what the server speaks: chat (docs/protocol.md), or a broker's: nats, redis (pub/sub, RESP3), mqtt "
          "(MQTT 5, QoS 0) (default chat; docs/loadgen.md, Protocols)")
      ->check(CLI::IsMember({"chat", "nats", "redis", "mqtt"}));
  command
      .add_option("--uring-buffers", o.uring_buffers,
                  "io_uring engine: 4 KiB receive buffers per thread, a power of two")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& text) {
            unsigned n = 0;
            const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), n);
            const bool ok =
                error == std::errc() && end == text.data() + text.size() && n >= 1 && n <= 32768 && (n & (n - 1)) == 0;
            return ok ? std::string() : "must be a power of two from 1 to 32768";
          },
          "POWER OF 2"));
  command
      .add_option("--tick-us", o.tick_us,
                  "chat sends fall on a grid of this many µs, and an io_uring worker sleeps at most this long; 0: "
                  "exact send times, a wake-up per completion")
      ->capture_default_str()
      ->check(cli::integer(0, 100000));
}

// Many hosts (docs/distributed.md): one process runs a slice of a global run.
void add_slice_options(CLI::App& command, Options& o) {
  command
      .add_option("--clients-total", o.clients_total,
                  "many hosts: the clients of the whole run, of which this process runs --clients from --client-offset")
      ->check(cli::integer(1, most_clients));
  command.add_option("--client-offset", o.client_offset, "many hosts: the global id of this process's first client")
      ->capture_default_str()
      ->check(cli::integer(0, most_clients));
  command
      .add_option("--start-at", o.start_at_ms,
                  "UNIX time in ms at which the phases that need every host start (after connecting; docs/loadgen.md)")
      ->check(cli::integer(1, std::int64_t{1} << 50));
  command
      .add_option("--clock-offset-ms", o.clock_offset_ms,
                  "TEST KNOB: this process's clocks read this much ahead (a skewed host); docs/distributed.md")
      ->capture_default_str()
      ->check(cli::number(-86'400'000, true, 86'400'000));
  auto* offset_ns = command
                        .add_option("--clock-offset-ns", o.clock_offset_ns,
                                    "many hosts: this host's UNIX clock less the run's reference clock, as measured "
                                    "(scripts/clock_offset.py)")
                        ->check(cli::integer(-(std::int64_t{1} << 50), std::int64_t{1} << 50));
  command
      .add_option("--clock-offset-bound-ns", o.clock_offset_bound_ns,
                  "many hosts: the measured offset is within this of the truth")
      ->check(cli::integer(1, std::int64_t{1} << 50))
      ->needs(offset_ns);
  offset_ns->needs(command.get_option("--clock-offset-bound-ns"));
}

// chat --find-ceiling and the bars a rate must pass (docs/loadgen.md, "Finding the ceiling").
void add_ceiling_options(CLI::App& chat, Options& options) {
  chat.add_flag("--find-ceiling", options.find_ceiling, "search for the highest sustained rate, starting at --rate");
  chat.add_option("--ceiling-growth", options.ceiling_growth, "factor between rates until one passes and one fails")
      ->capture_default_str()
      ->check(cli::number(1.1, true, 100));
  chat.add_option("--ceiling-precision", options.ceiling_precision,
                  "stop bisecting once failed rate / passed rate is at most this")
      ->capture_default_str()
      ->check(cli::number(1.001, true, 10));
  chat.add_option("--ceiling-max-steps", options.ceiling_max_steps, "measured windows in the whole search")
      ->capture_default_str()
      ->check(cli::integer(1, 100));
  chat.add_option("--p99-bar-ms", options.p99_bar_ms, "a rate passes only with p99 latency at most this")
      ->capture_default_str()
      ->check(cli::number(0, false, most_seconds * 1000));
  chat.add_option("--server-cgroup", options.server_cgroup,
                  "the server's cgroup directory: each window records how its CPU quota held the server back")
      ->check(cpu_cgroup);
  chat.add_option("--late-bar-pct", options.late_bar_pct,
                  "a rate passes only with at most this % of its sends late (> 1 ms)")
      ->capture_default_str()
      ->check(cli::number(0, true, 100));
}

// Says up front what will cap the run, so a short run is not a surprise.
std::vector<std::string> preflight(const Options& o) {
  std::vector<std::string> warnings;
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;  // ours to take; the hard limit is the real one
    setrlimit(RLIMIT_NOFILE, &files);
    getrlimit(RLIMIT_NOFILE, &files);
  }
  constexpr rlim_t spare = 16;  // stdio, epoll and eventfd per thread, /proc reads
  if (o.clients + spare > files.rlim_cur)
    warnings.push_back("fd limit " + std::to_string(files.rlim_cur) + " caps this run at about " +
                       std::to_string(files.rlim_cur > spare ? files.rlim_cur - spare : 0) + " connections");
  std::ifstream range_file("/proc/sys/net/ipv4/ip_local_port_range");
  unsigned low = 0, high = 0;
  if (range_file >> low >> high) {
    std::size_t sources = 1;
    if (!o.source_ips.empty()) sources = parse_address_range(o.source_ips).size();
    const std::uint64_t ports = static_cast<std::uint64_t>(high - low + 1) * sources;
    if (o.clients > ports)
      warnings.push_back("port range " + std::to_string(low) + "-" + std::to_string(high) + " x " +
                         std::to_string(sources) + " source address(es) gives " + std::to_string(ports) +
                         " connections; use --source-ips");
  }
  if (o.server_pid > 0) {
    std::ifstream limits("/proc/" + std::to_string(o.server_pid) + "/limits");
    std::string line;
    while (std::getline(limits, line)) {
      if (line.rfind("Max open files", 0) != 0) continue;
      std::istringstream fields(line.substr(14));
      std::uint64_t soft = 0;
      if (fields >> soft && o.clients + 8 > soft)
        warnings.push_back("the server's fd limit " + std::to_string(soft) + " caps it below " +
                           std::to_string(o.clients) + " clients");
    }
  }
  return warnings;
}

// loadgen clock: one reading of CLOCK_REALTIME per line read, as "UNIX_NS RESOLUTION_NS",
// at once: the reader times the round trip around it (scripts/clock_offset.py).
int run_clock(double skew_ms) {
  timespec resolution{};
  ::clock_getres(CLOCK_REALTIME, &resolution);
  const std::int64_t resolution_ns =
      std::max<std::int64_t>(1, resolution.tv_sec * 1'000'000'000LL + resolution.tv_nsec);
  const std::int64_t skew_ns = std::llround(skew_ms * 1e6);
  std::string request;
  while (std::getline(std::cin, request)) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    std::cout << now.tv_sec * 1'000'000'000LL + now.tv_nsec + skew_ns << ' ' << resolution_ns << '\n' << std::flush;
  }
  return 0;
}

// loadgen merge: reads every report, merges, writes; the checks are merge_reports'.
int run_merge(const std::vector<std::string>& inputs, const std::string& output) {
  std::vector<SliceReport> slices;
  try {
    for (const auto& path : inputs) {
      std::ifstream in(path);
      std::stringstream text;
      text << in.rdbuf();
      boost::system::error_code error;
      boost::json::value report = boost::json::parse(text.str(), error);
      if (error || !report.is_object()) {
        std::cerr << "loadgen merge: " << path << " is not a JSON report" << (error ? ": " + error.message() : "")
                  << "\n";
        return exit_merge_refused;
      }
      slices.push_back({path, std::move(report.as_object())});
    }
    const boost::json::object merged = merge_reports(slices);
    write_json_file(output, merged);
    std::cout << human_summary(merged) << std::flush;
    if (!merged.at("missing_clients").as_array().empty()) {
      std::cerr << "loadgen merge: clients " << boost::json::serialize(merged.at("missing_clients"))
                << " are in no report\n";
      return exit_merge_incomplete;
    }
  } catch (const MergeRefused& refused) {
    std::cerr << "loadgen merge: refused: " << refused.what() << "\n";
    return exit_merge_refused;
  } catch (const std::exception& error) {
    std::cerr << "loadgen merge: a report lacks what a merge needs (" << error.what() << ")\n";
    return exit_merge_refused;
  }
  return 0;
}

// The three modes' commands, each with the options every mode takes and its own.
CLI::App* add_idle_command(CLI::App& app, Options& options) {
  auto* idle = app.add_subcommand("idle", "ramp connections in steps, hold, sample memory at each step");
  add_common_options(*idle, options);
  add_slice_options(*idle, options);
  idle->add_option("--steps", options.steps, "ramp steps (after a baseline at 0 clients)")
      ->capture_default_str()
      ->check(cli::integer(1, 1000));
  idle->add_option("--hold-s", options.hold_s, "longest hold per step while memory settles")
      ->capture_default_str()
      ->check(cli::number(0, true, most_seconds));
  return idle;
}

CLI::App* add_broadcast_command(CLI::App& app, Options& options) {
  auto* broadcast = app.add_subcommand("broadcast", "one sender, every other client receives each line");
  add_common_options(*broadcast, options);
  add_slice_options(*broadcast, options);
  broadcast->add_option("--messages", options.messages, "lines to send")
      ->capture_default_str()
      ->check(cli::integer(1, 10000000));
  broadcast->add_option("--interval-ms", options.interval_ms, "open-loop interval between lines")
      ->capture_default_str()
      ->check(cli::number(0, false, most_seconds * 1000));
  broadcast->add_option("--size", options.size, "bytes per line, LF included")
      ->capture_default_str()
      ->check(cli::integer(1, 1 << 20));
  return broadcast;
}

CLI::App* add_chat_command(CLI::App& app, Options& options) {
  auto* chat = app.add_subcommand("chat", "clients in rooms of K, each sending open-loop at a fixed rate");
  add_common_options(*chat, options);
  add_slice_options(*chat, options);
  chat->add_option("--room-size", options.room_size, "clients per room")
      ->capture_default_str()
      ->check(cli::integer(1, most_clients));
  chat->add_option("--rate", options.rates, "lines per second per client; a list steps the load up in one run")
      ->capture_default_str()
      ->delimiter(',')
      ->check(cli::number(0, false, 1000000));
  chat->add_option("--duration-s", options.duration_s, "measured window per rate")
      ->capture_default_str()
      ->check(cli::number(0, false, most_seconds));
  chat->add_option("--warmup-s", options.warmup_s, "sending before the window, excluded from latency")
      ->capture_default_str()
      ->check(cli::number(0, true, most_seconds));
  chat->add_option("--size", options.size, "bytes per line, LF included")
      ->capture_default_str()
      ->check(cli::integer(1, 1 << 20));
  add_ceiling_options(*chat, options);
  return chat;
}

// Combinations of options the parser cannot check one option at a time; nullopt if fine.
std::optional<std::string> usage_error(const Options& options) {
  if (options.find_ceiling && options.rates.size() != 1)
    return "--find-ceiling takes one --rate, the rate it starts from, not a list";
  if (options.clients_total > 0 && std::uint64_t{options.client_offset} + options.clients > options.clients_total)
    return "--client-offset " + std::to_string(options.client_offset) + " + --clients " +
           std::to_string(options.clients) + " exceeds --clients-total " + std::to_string(options.clients_total);
  if (options.clients_total == 0 && options.client_offset > 0) return "--client-offset needs --clients-total";
  if (options.clock_offset_bound_ns > 0 && options.clients_total == 0)
    return "--clock-offset-ns times lines between the slices of a run; it needs --clients-total";
  if (options.mode != Mode::chat && (options.clients_total > 0) != (options.start_at_ms > 0))
    return std::string(mode_name(options.mode)) +
           " takes --clients-total and --start-at together: a slice's phases start at times laid out from "
           "--start-at, and only a slice has them";
  if (options.find_ceiling && (options.clients_total > 0 || options.start_at_ms > 0))
    return "--find-ceiling adapts each step to the last one; it cannot run as a slice (--clients-total, --start-at)";
  return std::nullopt;
}

// Runs the mode, writes the report and the summary; the exit status (docs/exit-status.md).
int run_mode(const Options& options) {
  try {
    boost::json::object report = make_report_skeleton(options);
    for (const auto& warning : preflight(options)) {
      std::cerr << "loadgen: warning: " << warning << "\n";
      report["warnings"].as_array().push_back(boost::json::value(warning));
    }
    Progress progress(options.quiet);
    std::uint64_t ever_connected = 0;
    {
      Engine engine(options);
      report["engine"] = engine.name();
      report["options"].as_object()["engine"] = options.engine == EngineKind::automatic ? "auto" : engine.name();
      report["engine_fallback"] = engine.fallback() ? boost::json::value(*engine.fallback()) : nullptr;
      if (engine.fallback())
        std::cerr << "loadgen: note: using the epoll engine: io_uring unavailable: " << *engine.fallback() << "\n";
      switch (options.mode) {
        case Mode::idle:
          run_idle(engine, report, progress);
          break;
        case Mode::broadcast:
          run_broadcast(engine, report, progress);
          break;
        case Mode::chat:
          run_chat(engine, report, progress);
          break;
      }
      ever_connected = engine.sum(&Worker::connected);
    }
    if (!options.json_path.empty()) write_json_file(options.json_path, report);
    std::cout << human_summary(report) << std::flush;
    if (ever_connected == 0) {
      // The report says why (limit_hit); the status lets a script notice without reading it.
      std::cerr << "loadgen: no client connected to " << options.host << ":" << options.port << "\n";
      return exit_no_client;
    }
    if (const auto* ceiling = report.at("ceiling").if_object(); ceiling && ceiling->at("server_died").as_bool()) {
      std::cerr << "loadgen: server died during the search\n";
      return exit_server_died;
    }
  } catch (const std::exception& error) {
    std::cerr << "loadgen: " << error.what() << "\n";
    return cli::exit_failure;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"loadgen: drives a chat server or a broker and measures it (idle | broadcast | chat)", "loadgen"};
  app.require_subcommand(1);
  add_idle_command(app, options);  // the mode when neither of the others is parsed
  auto* broadcast = add_broadcast_command(app, options);
  auto* chat = add_chat_command(app, options);

  std::vector<std::string> merge_inputs;
  std::string merge_output;
  auto* merge = app.add_subcommand(
      "merge", "merge the reports of the slices of one run (chat, broadcast or idle) into one (docs/distributed.md)");
  merge->add_option("reports", merge_inputs, "the slices' JSON reports")->required()->check(CLI::ExistingFile);
  merge->add_option("--json", merge_output, "write the merged report to this file")->required()->check(writable_path);

  double clock_skew_ms = 0;
  auto* clock = app.add_subcommand("clock",
                                   "answer each line on stdin with this host's UNIX time and clock resolution in ns "
                                   "(scripts/clock_offset.py measures a host's offset with it)");
  clock
      ->add_option("--clock-offset-ms", clock_skew_ms,
                   "TEST KNOB: read the clock this much ahead, as chat --clock-offset-ms")
      ->capture_default_str()
      ->check(cli::number(-86'400'000, true, 86'400'000));

  cli::parse(app, argc, argv, "docs/loadgen.md");
  if (merge->parsed()) return run_merge(merge_inputs, merge_output);
  if (clock->parsed()) return run_clock(clock_skew_ms);
  options.mode = chat->parsed() ? Mode::chat : broadcast->parsed() ? Mode::broadcast : Mode::idle;
  if (const auto why = usage_error(options)) {
    std::cerr << "loadgen: " << *why << "\n";
    return exit_usage;
  }
  std::signal(SIGPIPE, SIG_IGN);  // a closed peer is an error code, not a death

  // Spread big loopback runs over source addresses by default: one address has ~28k ports,
  // and its ports' TIME_WAIT leftovers from earlier runs make connect() slow long before.
  if (options.source_ips.empty() && options.clients > 1000 && options.host.rfind("127.", 0) == 0)
    options.source_ips = "127.0.0.1-127.0.0." + std::to_string(1 + (options.clients - 1) / 5000);
  return run_mode(options);
}
