// chat mode (docs/loadgen.md, "What each mode does"): rooms of --room-size, every member
// sending at --rate; one measured window per rate, or the ceiling search (ceiling.hpp)
// over such windows.
#include <algorithm>
#include <cmath>
#include <map>

#include "ceiling.hpp"
#include "scenario_common.hpp"

namespace loadgen {

namespace json = boost::json;

namespace {

// The /stats replies a worker's message handler received, beside its WorkerTraffic.
struct StatsReplies {
  OwnedCount count;
  std::string last;
};

// A room member's message: its /joined (a broker's acknowledged subscription), a /stats
// reply, or a chat line.
void on_message(WorkerTraffic& traffic, StatsReplies& stats, Connection& connection, const Message& message,
                std::int64_t now, const Phase& phase) {
  switch (message.kind) {
    case Reply::none:
      count_chat_line(traffic, connection, message.text, now, phase);
      return;
    case Reply::joined:
      mark_joined(traffic, connection);
      return;
    case Reply::stats:
      stats.last.assign(message.text);
      ++stats.count;
      return;
    default:
      return;  // nothing else of the server's is counted here; an error is the engine's
  }
}

using ServerStats = std::optional<std::map<std::string, std::string>>;

// Ask the server for its counters on one open connection; nullopt if no reply in time, or
// if the server speaks a broker's protocol, which has no /stats.
ServerStats query_server_stats(Engine& engine, std::vector<StatsReplies>& replies) {
  if (engine.options().protocol != Protocol::chat) return std::nullopt;
  for (auto& worker : engine.workers()) {
    StatsReplies& stats = replies[worker->index()];
    std::uint64_t replies_before = 0;
    bool sent = false;
    worker->call([&] {
      replies_before = stats.count.value();
      for (auto& connection : worker->connections())
        if (connection->state == ConnectionState::open && connection->joined) {
          sent = worker->send(*connection, stats_command);
          if (sent) break;
        }
    });
    if (!sent) continue;
    if (!wait_until(
            Clock::now() + std::chrono::seconds(2), [&] { return stats.count.value() > replies_before; }, nullptr))
      return std::nullopt;
    std::string reply;
    worker->call([&] { reply = stats.last; });
    return parse_stats_reply(reply);
  }
  return std::nullopt;
}

std::optional<std::uint64_t> stat_number(const ServerStats& stats, const std::string& key) {
  if (!stats) return std::nullopt;
  const auto it = stats->find(key);
  if (it == stats->end()) return std::nullopt;
  try {
    return std::stoull(it->second);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// A server counter's growth between two replies; nullopt unless both have it.
std::optional<std::uint64_t> stat_delta(const ServerStats& before, const ServerStats& after, const std::string& key) {
  const auto first = stat_number(before, key), last = stat_number(after, key);
  if (!first || !last) return std::nullopt;
  return *last - *first;
}

// Everything the measured windows of one chat run share; lives for the whole run.
struct ChatRun {
  ChatRun(Engine& e, json::object& r, Progress& p)
      : engine(e),
        options(e.options()),
        report(r),
        progress(p),
        room_size(std::max(1u, options.room_size)),
        total(sliced(options) ? options.clients_total : e.attempted()),
        stats(e.workers().size()),
        traffic(e) {}

  Engine& engine;
  const Options& options;
  json::object& report;
  Progress& progress;
  std::uint32_t room_size;
  std::uint32_t total;                             // clients in the global run: --clients-total, else attempted
  double ahead_ms = 0;                             // this UNIX clock less the reference clock
  std::int64_t start_at_ns = 0, step_span_ns = 0;  // --start-at on the steady clock; one step's length
  unsigned steps_started = 0;
  std::vector<StatsReplies> stats;  // before traffic, whose handlers use it
  Traffic traffic;
  std::uint64_t planned_total = 0;    // sends scheduled by every step so far
  std::uint64_t sender_pairs = 0;     // sum over rooms of m (m - 1), m its joined senders
  std::uint64_t fan_out = 0;          // the largest m - 1: the deliveries of one send
  std::uint64_t expected_so_far = 0;  // deliveries owed by every line sent so far
  std::uint64_t lost_so_far = 0;
  json::value settle = nullptr;  // how the wait before the next step went
};

// What every joined sender of this process sent, by global id.
std::map<std::uint32_t, std::uint64_t> sent_by_sender(Engine& engine) {
  return engine.reduce(
      [&](Worker& worker) {
        std::map<std::uint32_t, std::uint64_t> sent_by;
        for (auto& connection : worker.connections())
          if (connection->sender) sent_by[global_id(engine.options(), *connection)] = connection->sent;
        return sent_by;
      },
      [](auto& total, auto&& share) { total.merge(share); });  // each id is one worker's
}

// Every receiver's lines from the other joined members of its room, in one pass per worker.
// What each sender sent must be final (every send loop stopped); lines may still be
// arriving, so each receiver's counters are read once and stay consistent with each other:
// delivered + lost + outstanding = expected for every receiver. In a slice, the senders of
// other slices count as having sent nothing: only the merge knows what they sent.
ChatLossCounter count_chat_loss(Engine& engine, std::uint32_t room_size) {
  const ChatLossCounter senders(sent_by_sender(engine), room_size);
  return engine.reduce(
      [&](Worker& worker) {
        ChatLossCounter counter = senders;
        for (auto& connection : worker.connections())
          if (connection->sender)
            counter.add_receiver(global_id(engine.options(), *connection), connection->state != ConnectionState::closed,
                                 connection->track_base, connection->tracks);
        return counter;
      },
      [](ChatLossCounter& total, const ChatLossCounter& share) { total.add_receivers_of(share); });
}

// What `loadgen merge` needs to count loss over every slice (docs/loadgen.md, "loss_detail"):
// what each sender sent, and per receiver, for each member of its room, the next sequence
// number it expects (the highest heard + 1, 0: none) and the gaps below it (lines missing
// there, which per-sender FIFO means will never come).
json::object loss_detail_json(Engine& engine) {
  json::array sender_ids, sent;
  for (const auto& [id, n] : sent_by_sender(engine)) sender_ids.push_back(id), sent.push_back(n);
  // By id, so the document does not depend on the threads.
  auto receivers = engine.reduce(
      [&](Worker& worker) {
        std::map<std::uint32_t, json::object> receivers;
        for (auto& connection : worker.connections())
          if (connection->sender)
            receivers[global_id(engine.options(), *connection)] = receiver_loss_json(engine.options(), *connection);
        return receivers;
      },
      [](auto& total, auto&& share) { total.merge(share); });
  json::array receiver_array;
  for (auto& [id, receiver] : receivers) receiver_array.push_back(std::move(receiver));
  return {{"senders", json::object{{"id", std::move(sender_ids)}, {"sent", std::move(sent)}}},
          {"receivers", std::move(receiver_array)}};
}

bool server_gone(Engine& engine) {
  const pid_t pid = engine.options().server_pid;
  return engine.open_connections() == 0 || (pid > 0 && !process_alive(pid));
}

// Every client joins its room (/join rROOM, or the broker's subscription) and waits for
// /joined (the broker's acknowledgement), at most --connect-timeout-s.
void join_rooms(ChatRun& run) {
  const Options& options = run.options;
  Phase& phase = run.traffic.phase;
  run.ahead_ms = set_line_clock(phase, options);
  run.engine.for_each_worker([&](Worker& worker) {
    worker.set_message_handler([&traffic = run.traffic.of(worker), &stats = run.stats[worker.index()], &phase](
                                   Connection& c, const Message& message, std::int64_t now) {
      on_message(traffic, stats, c, message, now, phase);
    });
    std::string join;
    for (auto& connection : worker.connections()) {
      const std::uint32_t room = global_id(options, *connection) / run.room_size;
      connection->track_base = room * run.room_size;
      connection->tracks.assign(std::min(run.room_size, run.total - connection->track_base), SenderTrack{});
      worker.wire().join(join, room);
      worker.send(*connection, join);
    }
  });
  auto joined = [&] { return run.traffic.sum(&WorkerTraffic::joined); };
  const bool all_joined = wait_until(
      Clock::now() + seconds(options.connect_timeout_s), [&] { return joined() >= run.engine.open_connections(); },
      [&] {
        run.progress.show("joining: " + std::to_string(joined()) + "/" + std::to_string(run.engine.open_connections()));
      });
  if (!all_joined)
    warn(run.report,
         "not every client got /joined (a broker: its subscription acknowledged) before the deadline; "
         "those are left out");
}

// When this process was ready, and with --start-at when the steps start: on the reference
// clock, if measured.
void schedule_steps(ChatRun& run) {
  const Options& options = run.options;
  run.report["ready_at_unix_ms"] = unix_ms_now(run.ahead_ms);
  if (options.start_at_ms > 0) {
    run.start_at_ns = steady_ns_at_unix_ms(options.start_at_ms, run.ahead_ms);
    run.step_span_ns = static_cast<std::int64_t>((options.warmup_s + options.duration_s + options.drain_s + 1) * 1e9);
  }
}

// Every joined client sends; the offered load follows from the rooms' joined members.
void choose_senders(ChatRun& run) {
  // A room's members may be on different workers: their counts add up.
  const auto room_senders = run.engine.reduce(
      [&](Worker& worker) {
        std::map<std::uint32_t, std::uint64_t> room_senders;
        for (auto& connection : worker.connections())
          if (connection->joined && connection->state == ConnectionState::open) {
            connection->sender = true;
            ++room_senders[global_id(run.options, *connection) / run.room_size];
          }
        return room_senders;
      },
      [](auto& total, const auto& share) {
        for (const auto& [room, members] : share) total[room] += members;
      });
  for (const auto& [room, members] : room_senders) {
    run.sender_pairs += members * (members - 1);
    run.fan_out = std::max(run.fan_out, members - 1);
  }
}

// On a worker's thread: clears its window's counts and starts its senders on the step's
// schedule. Returns the sends it planned.
std::uint64_t start_step_sends(ChatRun& run, Worker& worker, double rate, std::int64_t start_ns) {
  const Options& options = run.options;
  const Phase& phase = run.traffic.phase;
  WorkerTraffic& traffic = run.traffic.of(worker);
  traffic.window = WindowCounts{};
  traffic.window.intended_from_ns = phase.window_start_ns;
  traffic.window.intended_until_ns = phase.window_end_ns;
  traffic.window.arrivals = ArrivalWindow{phase.window_start_ns, phase.window_end_ns, 0};
  std::vector<Sender> senders;
  std::uint64_t planned = 0;
  for (auto& connection : worker.connections()) {
    if (!connection->sender) continue;
    const std::uint32_t id = global_id(options, *connection);
    const auto offset = static_cast<std::int64_t>(1e9 / rate * id / std::max<std::uint32_t>(1, run.total));
    const std::int64_t tick_ns = std::int64_t{options.tick_us} * 1000;
    const OpenLoopSchedule schedule(start_ns + offset, rate, tick_ns);
    SendPlan plan{start_ns + offset, rate, schedule.due_by(phase.window_end_ns - 1), phase.window_start_ns, tick_ns};
    senders.push_back(Sender{connection.get(), plan, 0, 0, id, id / run.room_size});
    planned += plan.total;
  }
  start_sending(worker, traffic, phase, std::move(senders), options.size);
  return planned;
}

// How one rate step began.
struct StepStart {
  std::int64_t start_ns;      // the first sends' intended time
  std::int64_t late_ns;       // how long after start_ns this process began (> 0: late)
  std::uint64_t sent_before;  // lines sent by the steps before
};

// The step's phase: warm-up then the measured window; each client starts at its own offset
// within one interval, so the load is spread rather than synchronised. With --start-at
// every slice starts step i together, at T plus i whole step lengths (warm-up, window,
// drain deadline and a second to spare), each on its own clock.
StepStart begin_step(ChatRun& run, double rate) {
  const Options& options = run.options;
  Phase& phase = run.traffic.phase;
  const std::int64_t start_ns = options.start_at_ms > 0
                                    ? run.start_at_ns + static_cast<std::int64_t>(run.steps_started) * run.step_span_ns
                                    : to_ns(Clock::now() + std::chrono::milliseconds(50));
  const std::int64_t late_ns = to_ns(Clock::now()) - start_ns;
  if (options.start_at_ms > 0 && late_ns > 1'000'000)
    warn(run.report, "ready " + std::to_string(late_ns / 1'000'000) + " ms after the start of rate step " +
                         std::to_string(run.steps_started) +
                         " (--start-at): its first sends were late, and lines other processes sent to its rooms before "
                         "then never reached it");
  ++run.steps_started;
  phase.window_start_ns = start_ns + static_cast<std::int64_t>(options.warmup_s * 1e9);
  phase.window_end_ns = phase.window_start_ns + static_cast<std::int64_t>(options.duration_s * 1e9);
  const StepStart start{start_ns, late_ns, run.traffic.sum(&WorkerTraffic::lines_sent)};
  run.planned_total += run.engine.reduce([&](Worker& worker) { return start_step_sends(run, worker, rate, start_ns); });
  return start;
}

void show_step(ChatRun& run, double rate) {
  run.progress.show("chat rate " + std::to_string(rate) + "/s: " + std::to_string(run.traffic.delivered()) +
                    " delivered, " + std::to_string(run.engine.open_connections()) + " connected");
}

// Waits through the warm-up and the measured window; the CPU readings at its two ends.
std::pair<CpuWindow, CpuWindow> measure_window(ChatRun& run, double rate) {
  const Phase& phase = run.traffic.phase;
  wait_until(
      from_ns(phase.window_start_ns), [] { return false; }, [&] { show_step(run, rate); });
  const auto cpu_start = CpuWindow::now(run.options.server_pid, run.options.server_cgroup);
  wait_until(
      from_ns(phase.window_end_ns), [] { return false; }, [&] { show_step(run, rate); });
  return {cpu_start, CpuWindow::now(run.options.server_pid, run.options.server_cgroup)};
}

// Senders that fell behind finish their last sends; then the lines on their way arrive.
// Returns the deliveries owed so far (0 in a slice, which cannot know them).
std::uint64_t drain_step(ChatRun& run, double rate, const StepStart& start) {
  Engine& engine = run.engine;
  const Options& options = run.options;
  wait_until(
      Clock::now() + seconds(options.drain_s),
      [&] {
        return run.traffic.sum(&WorkerTraffic::lines_sent) >= run.planned_total || engine.open_connections() == 0;
      },
      [&] { show_step(run, rate); });
  // Expected deliveries so far: each joined member of a room hears every line the other
  // joined members sent, over the whole run (warm-up included). A slice cannot know what
  // the other slices sent, so it waits for the lines to stop coming.
  const std::uint64_t expected = sliced(options) ? 0 : ChatLossCounter(sent_by_sender(engine), run.room_size).expected;
  // With --start-at, every slice counts at the same moment, the end of the step's span
  // less half a second (each on its own clock): no slice stops listening while another,
  // started late, still sends to its rooms.
  if (sliced(options) && options.start_at_ms > 0)
    wait_until(
        from_ns(start.start_ns + run.step_span_ns - 500'000'000), [] { return false; },
        [&] { run.progress.show("draining"); });
  else if (sliced(options))
    drain_until_quiet(engine, run.traffic, std::chrono::milliseconds(500), run.progress);
  else
    drain(engine, run.traffic, expected, run.progress);
  return expected;
}

// Stops every sender still behind (no further sends in this step) and counts the step.
WindowCounts count_step(ChatRun& run) {
  return run.engine.reduce([&](Worker& worker) {
    WorkerTraffic& traffic = run.traffic.of(worker);
    stop_sending(worker, traffic);
    return traffic.window;
  });
}

// What the ceiling search judges a step by (ceiling.hpp), from its counts, the loss so far
// and the CPU of its window.
StepResult step_result(ChatRun& run, double rate, const WindowCounts& counts, const ChatLossCounter& loss,
                       const StepStart& start, const CpuUse& cpu) {
  StepResult result;
  result.rate_per_client = rate;
  result.offered_per_s = rate * static_cast<double>(run.sender_pairs);
  result.deliveries_per_s = counts.arrivals.per_second();
  result.granularity_per_s = static_cast<double>(run.fan_out) / run.options.duration_s;
  if (counts.latency.count() > 0) result.p99_us = static_cast<double>(counts.latency.percentile(0.99)) / 1000.0;
  result.sends = run.traffic.sum(&WorkerTraffic::lines_sent) - start.sent_before;
  result.late_sends = counts.late_sends;
  result.late_sends_stalled = counts.late_sends_stalled;
  result.lost = loss.loss.lost - std::min(loss.loss.lost, run.lost_so_far);
  result.outstanding = loss.loss.outstanding;
  result.server_cpu_fraction = cpu.server_fraction;
  result.server_cores = cpu.server_cores;
  result.server_cgroup = cpu.server_cgroup;
  result.loadgen_cpu_fraction = cpu.loadgen_fraction;
  result.cores = cpu.cores;
  result.others_on_loadgen_cores = cpu.others_on_loadgen_cores;
  result.loadgen_throttled_s = cpu.loadgen_throttled_s;
  return result;
}

// The step's rate_steps[] entry.
json::object step_json(ChatRun& run, const StepResult& result, const WindowCounts& counts, const StepStart& start,
                       std::uint64_t expected) {
  const Options& options = run.options;
  const double duration_s = options.duration_s;
  return {
      {"rate", result.rate_per_client},
      {"latency_us", latency_json(counts.latency)},
      {"latency_histogram", histogram_json(counts.latency)},
      {"start_late_ms", options.start_at_ms > 0 ? json::value(std::round(static_cast<double>(start.late_ns) / 1e5) / 10)
                                                : json::value(nullptr)},
      // deliveries_per_s by arrival time: a server that falls behind shows it here.
      // window_lines_delivered counts the window's lines however late they came.
      {"throughput", json::object{{"sent_per_s", static_cast<double>(counts.sent) / duration_s},
                                  {"deliveries_per_s", result.deliveries_per_s},
                                  {"offered_per_s", result.offered_per_s},
                                  {"window_arrivals", counts.arrivals.arrivals},
                                  {"window_lines_sent", counts.sent},
                                  {"window_lines_delivered", counts.deliveries}}},
      {"late_sends", counts.late_sends},
      {"late_sends_stalled", counts.late_sends_stalled},
      // Of latency_us's samples, those of another process's lines (reference clock).
      {"cross_slice_samples", counts.cross_slice_samples},
      {"cross_slice_min_latency_us", cross_slice_min_latency_us(counts)},
      {"lost", result.lost},
      {"outstanding", result.outstanding},
      {"expected_so_far", sliced(options) ? json::value(nullptr) : json::value(expected)},
      {"cpu", run.report["cpu"]},
      {"settle", run.settle}};
}

// One measured window at one per-client rate: warm-up, window, drain. Every sender is
// stopped at the end, so the next call starts from a clean schedule.
StepResult run_chat_step(ChatRun& run, double rate) {
  const StepStart start = begin_step(run, rate);
  const auto [cpu_start, cpu_end] = measure_window(run, rate);
  const std::uint64_t expected = drain_step(run, rate, start);
  const WindowCounts counts = count_step(run);
  const ChatLossCounter loss = count_chat_loss(run.engine, run.room_size);
  run.expected_so_far = loss.expected;
  const CpuUse cpu = fill_cpu(run.report, cpu_start, cpu_end, run.options.server_pid);
  StepResult result = step_result(run, rate, counts, loss, start, cpu);
  run.lost_so_far = loss.loss.lost;
  result.server_died = server_gone(run.engine);
  result.detail = step_json(run, result, counts, start, expected);
  run.settle = nullptr;
  return result;
}

// Before a search step: every line sent so far has arrived (or is known lost) and the
// server has gone idle (under 5% of a core over 250 ms), so no step inherits another's
// backlog. Waits at most --drain-s; false if the server is gone.
bool settle_before_step(ChatRun& run) {
  Engine& engine = run.engine;
  const Options& options = run.options;
  const auto start = Clock::now();
  const auto deadline = start + seconds(options.drain_s);
  constexpr auto interval = std::chrono::milliseconds(250);
  constexpr double idle_fraction = 0.05;
  bool drained = false, idle = options.server_pid <= 0;
  std::optional<double> last_fraction;
  while (!server_gone(engine)) {
    drained = run.traffic.delivered() + run.lost_so_far >= run.expected_so_far;  // lost lines never come
    const auto before = options.server_pid > 0 ? process_cpu(options.server_pid) : std::nullopt;
    std::this_thread::sleep_for(interval);
    if (options.server_pid > 0) {
      const auto after = process_cpu(options.server_pid);
      if (!before || !after) break;
      // Of one core, not of the server's cores: the question is whether it still works at all.
      last_fraction = (after->user_s + after->sys_s - before->user_s - before->sys_s) /
                      std::chrono::duration<double>(interval).count();
      idle = *last_fraction < idle_fraction;
    }
    if ((drained && idle) || Clock::now() >= deadline) break;
  }
  if (server_gone(engine)) return false;
  run.settle = json::object{{"seconds", std::chrono::duration<double>(Clock::now() - start).count()},
                            {"drained", drained},
                            {"server_idle", options.server_pid > 0 ? json::value(idle) : json::value(nullptr)},
                            {"server_cpu_fraction", last_fraction ? json::value(std::round(*last_fraction * 1e4) / 1e4)
                                                                  : json::value(nullptr)}};
  if (!drained || !idle)
    warn(run.report, "before a ceiling step the server was still " + std::string(drained ? "busy" : "delivering") +
                         " after --drain-s; that step may include the previous one's backlog");
  return true;
}

// One measured window per --rate value, in order, until every connection is gone. The
// top-level figures are the last window's.
json::array run_rates(ChatRun& run) {
  json::array rate_steps;
  for (const double rate : run.options.rates) {
    const StepResult step = run_chat_step(run, rate);
    rate_steps.push_back(step.detail);
    run.report["latency_us"] = step.detail.at("latency_us");
    run.report["latency_histogram"] = step.detail.at("latency_histogram");
    run.report["throughput"] = step.detail.at("throughput");
    if (run.engine.open_connections() == 0) break;
  }
  return rate_steps;
}

CeilingOptions ceiling_options(const Options& options) {
  CeilingOptions search;
  search.start_rate = options.rates.front();
  search.growth = options.ceiling_growth;
  search.precision = options.ceiling_precision;
  search.max_steps = options.ceiling_max_steps;
  search.criteria.p99_bar_us = options.p99_bar_ms * 1000;
  search.criteria.max_late_fraction = options.late_bar_pct / 100;
  return search;
}

// --find-ceiling: the search's windows (ceiling.hpp). The top-level figures are the
// ceiling's window, or the last one if no rate passed.
json::array search_ceiling(ChatRun& run) {
  json::object& report = run.report;
  if (run.options.server_pid <= 0)
    warn(report,
         "--find-ceiling without --server-pid cannot wait for the server to go idle between steps, nor report its "
         "CPU");
  json::array rate_steps;
  const CeilingResult result = find_ceiling(
      ceiling_options(run.options),
      [&](double rate) {
        StepResult step = run_chat_step(run, rate);
        rate_steps.push_back(step.detail);
        return step;
      },
      [&] { return settle_before_step(run); });
  report["ceiling"] = ceiling_json(result);
  if (result.server_died)
    run.engine.hit_limit("server died during the ceiling search, after " + std::to_string(result.steps.size()) +
                         " steps");
  if (!rate_steps.empty()) {
    const json::object& top = rate_steps[result.ceiling.value_or(rate_steps.size() - 1)].as_object();
    report["latency_us"] = top.at("latency_us");
    report["latency_histogram"] = top.at("latency_histogram");
    report["throughput"] = top.at("throughput");
    report["cpu"] = top.at("cpu");
  }
  return rate_steps;
}

// The whole run's figures: its lines over every step, and the server's counters.
struct ChatTotals {
  ChatLossCounter lines;
  std::uint64_t unknown_lines = 0, cross_slice_untimed = 0;
  // The server's lines_out after less before, except in a slice: there it counts the other
  // slices' deliveries too, so the launcher reads the server's counters over the whole run
  // instead (scripts/run_distributed.sh).
  std::optional<std::uint64_t> server_lines_out;
  std::optional<std::uint64_t> server_lines_in;  // after less before
};

ChatTotals count_totals(ChatRun& run, const ServerStats& before, const ServerStats& after) {
  ChatLossCounter lines = count_chat_loss(run.engine, run.room_size);
  const auto [unknown, untimed] = run.engine.reduce(
      [&](Worker& worker) {
        const WorkerTraffic& traffic = run.traffic.of(worker);
        return std::pair{traffic.unknown_lines, traffic.cross_slice_deliveries};
      },
      [](auto& total, const auto& share) {
        total.first += share.first;
        total.second += share.second;
      });
  return {std::move(lines), unknown, untimed,
          sliced(run.options) ? std::nullopt : stat_delta(before, after, "lines_out"),
          stat_delta(before, after, "lines_in")};
}

json::object lines_json(const ChatRun& run, const ChatTotals& totals) {
  const LossTotals& loss = totals.lines.loss;
  // A slice's expected, lost and outstanding need the other slices' sends: null here,
  // counted by `loadgen merge` from loss_detail.
  auto whole_run_only = [&](std::uint64_t value) {
    return sliced(run.options) ? json::value(nullptr) : json::value(value);
  };
  return {{"sent", totals.lines.sent},
          {"delivered", loss.received},
          {"expected", whole_run_only(totals.lines.expected)},
          {"lost", whole_run_only(loss.lost)},
          {"outstanding", whole_run_only(loss.outstanding)},
          {"duplicated", loss.duplicated},
          {"reordered", loss.reordered},
          {"receivers", totals.lines.receivers},
          {"receivers_with_loss", loss.receivers_with_loss},
          {"receivers_with_outstanding", loss.receivers_with_outstanding},
          {"receivers_disconnected", totals.lines.receivers_disconnected},
          {"unknown", totals.unknown_lines},
          {"server_lines_out", optional_json(totals.server_lines_out)}};
}

void report_server_stats(ChatRun& run, const ChatTotals& totals, const ServerStats& after) {
  if (run.options.protocol != Protocol::chat) return;  // a broker has no /stats
  if (!after) {
    warn(run.report, "the server did not answer /stats at the end; server_lines_out is null");
    return;
  }
  json::object server;
  for (const auto& [key, value] : *after) server[key] = value;
  run.report["server_stats"] = json::object{{"after", server},
                                            {"lines_in_delta", optional_json(totals.server_lines_in)},
                                            {"lines_out_delta", optional_json(totals.server_lines_out)}};
  const std::uint64_t received = totals.lines.loss.received;
  if (totals.server_lines_out && *totals.server_lines_out != received)
    warn(run.report, "server lines_out delta " + std::to_string(*totals.server_lines_out) + " differs from the " +
                         std::to_string(received) + " deliveries received");
}

void report_totals(ChatRun& run, const ChatTotals& totals, const ServerStats& stats_after, json::array rate_steps) {
  json::object& report = run.report;
  const std::uint64_t outstanding = totals.lines.loss.outstanding;
  if (outstanding > 0 && !sliced(run.options))
    warn(report, std::to_string(outstanding) +
                     " lines had not arrived by the end of the run (server behind by more than --drain-s); "
                     "latency percentiles leave them out, so they are optimistic");
  report["lines"] = lines_json(run, totals);
  report_server_stats(run, totals, stats_after);
  // The clock block's samples are those of the last step.
  const json::object* last_step = rate_steps.empty() ? nullptr : &rate_steps.back().as_object();
  auto of_last_step = [&](const char* key, json::value none) { return last_step ? last_step->at(key) : none; };
  json::value cross_samples = of_last_step("cross_slice_samples", 0);
  json::value cross_min = of_last_step("cross_slice_min_latency_us", nullptr);
  report["rate_steps"] = std::move(rate_steps);
  report["loss_detail"] = loss_detail_json(run.engine);
  report["clock"] = clock_json(run.options, std::move(cross_samples), std::move(cross_min), totals.cross_slice_untimed);
}

}  // namespace

void run_chat(Engine& engine, json::object& report, Progress& progress) {
  ramp_all(engine, report, progress);
  ChatRun run(engine, report, progress);
  join_rooms(run);
  const ServerStats stats_before = query_server_stats(engine, run.stats);
  schedule_steps(run);
  choose_senders(run);
  json::array rate_steps = run.options.find_ceiling ? search_ceiling(run) : run_rates(run);
  progress.finish();
  const ServerStats stats_after = query_server_stats(engine, run.stats);
  report_totals(run, count_totals(run, stats_before, stats_after), stats_after, std::move(rate_steps));
  finish_common(engine, report);
}

}  // namespace loadgen
