// What the three modes (idle.cpp, broadcast.cpp, chat.cpp) share: the traffic modes'
// per-worker state and send loop, the common part of their message handlers, ramp and memory
// steps, the CPU window, drain and the clock. Internal to the scenarios and their tests:
// main.cpp includes scenarios.hpp.
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine.hpp"
#include "metrics.hpp"
#include "protocol.hpp"
#include "report.hpp"
#include "scenarios.hpp"

namespace loadgen {

inline Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}
inline Clock::time_point from_ns(std::int64_t ns) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

// Per-connection send schedule of one phase: sends [0, total) of an open-loop schedule.
struct SendPlan {
  std::int64_t start_ns;
  double rate;
  std::uint64_t total;
  std::int64_t window_start_ns;  // sends intended before this are warm-up
  std::int64_t tick_ns = 0;      // intended times fall on this grid (OpenLoopSchedule)
};

// State of the phase in progress, set by the main thread. own_*, the clock fields: before
// traffic starts, read by the send loops and message handlers. window_*: rewritten for
// each chat step while late lines may still arrive, so workers read them only in
// start_step_sends, on their own thread, and keep a copy (WindowCounts).
struct Phase {
  std::int64_t window_start_ns = 0, window_end_ns = INT64_MAX;
  // The senders of this process (global ids): their lines are timed exactly; another
  // process's only on the reference clock (docs/methodology.md, "Clocks across hosts").
  std::uint32_t own_first = 0, own_end = UINT32_MAX;
  // Line clock = steady clock + this. Unmeasured: the injected --clock-offset-ms. Measured
  // (reference_clock): the offset from the steady clock to the run's reference clock.
  std::int64_t line_clock_offset_ns = 0;
  bool reference_clock = false;
};

// One connection's share of a worker's sends in the current phase.
struct Sender {
  Connection* connection;
  SendPlan plan;
  std::uint64_t done = 0;     // sends made so far
  std::int64_t next_ns = 0;   // intended time of send `done`
  std::uint32_t line_id = 0;  // the sender id its lines carry: the global client id
  std::uint32_t room = 0;     // the room its lines go to (a broker's subject, channel or topic)
};

// What a worker counted of the measured window (chat: the rate step's, cleared when it
// begins; broadcast: the whole run's). Copied on the worker's thread and added up over
// the workers with +=.
struct WindowCounts {
  // The window by intended send time: the phase's bounds, copied on the worker's own thread
  // when its step starts, so that receiving never reads what the main thread writes for the
  // next step while the last one's late lines still arrive.
  std::int64_t intended_from_ns = 0, intended_until_ns = INT64_MAX;
  LatencyRecorder latency;               // deliveries whose intended send time is in the window
  std::uint64_t deliveries = 0;          // the count of those
  ArrivalWindow arrivals;                // deliveries that arrived during the window
  std::uint64_t sent = 0;                // sends intended in the window
  std::uint64_t late_sends = 0;          // sends made more than 1 ms after their intended time
  std::uint64_t late_sends_stalled = 0;  // of those, late only because the thread was kept off its core
  // Chat lines from another process timed on the run's reference clock (measured offsets,
  // docs/distributed.md "Clocks"), and the least of their latencies.
  std::uint64_t cross_slice_samples = 0;
  std::int64_t cross_slice_min_ns = INT64_MAX;

  WindowCounts& operator+=(const WindowCounts& other);
};

// One worker's share of a broadcast or chat run: what its send loop and its message handler
// keep, written on that worker's thread only. The main thread reads the counters while
// traffic flows, and the rest through Engine::reduce.
struct WorkerTraffic {
  // The send loop of the current phase.
  std::vector<Sender> senders;  // a heap, earliest next send first
  OwnedCount lines_sent;
  // The last wake-up of the send loop: its time and the thread's CPU time then.
  std::int64_t woke_ns = -1, woke_cpu_ns = 0;
  std::string scratch;  // line formatting without allocation
  std::string frame;    // a broker's frame around the line (Wire::publish), likewise

  // What the message handler counted.
  OwnedCount joined;                         // connections that completed the mode's handshake
  OwnedCount unique_deliveries;              // chat lines counted once per (receiver, sender, sequence)
  std::uint64_t unknown_lines = 0;           // lines that were neither a room member's chat line nor a reply
  std::uint64_t cross_slice_deliveries = 0;  // chat lines from another process's senders, untimed

  WindowCounts window;  // the measured window: the handler's deliveries, the send loop's sends
};

// The traffic of one broadcast or chat run, owned by its scenario: the phase in progress
// and one WorkerTraffic per worker. The workers' send loops and message handlers refer to it
// (and to what the scenario keeps beside it), so it ends them before it goes.
class Traffic {
 public:
  explicit Traffic(Engine& engine);
  ~Traffic();
  Traffic(const Traffic&) = delete;
  Traffic& operator=(const Traffic&) = delete;

  WorkerTraffic& of(const Worker& worker) { return workers_[worker.index()]; }
  // A counter summed over the workers, read while they run.
  std::uint64_t sum(OwnedCount WorkerTraffic::*counter) const;
  std::uint64_t delivered() const { return sum(&WorkerTraffic::unique_deliveries); }

  Phase phase;

 private:
  Engine& engine_;
  std::vector<WorkerTraffic> workers_;
};

// How long a thread was off its core after a deadline (a lower bound), from two readings
// of the wall clock and of its CPU clock: at its previous wake-up (woke) and now. Of the
// time between, what it did not run, less what it was meant to sleep (until deadline).
std::int64_t off_core_after_deadline_ns(std::int64_t woke_ns, std::int64_t woke_cpu_ns, std::int64_t now_ns,
                                        std::int64_t cpu_ns, std::int64_t deadline_ns);

// Starts the send loop of one worker over these senders (on the worker's thread); its
// lines carry the phase's line clock.
void start_sending(Worker& worker, WorkerTraffic& traffic, const Phase& phase, std::vector<Sender> senders,
                   unsigned size);
// Ends the send loop of one worker: no further sends in this phase.
void stop_sending(Worker& worker, WorkerTraffic& traffic);

// The message handlers' common part (broadcast.cpp, chat.cpp each have their own handler).
// A connection completed its mode's handshake: it takes part from now on.
void mark_joined(WorkerTraffic& traffic, Connection& connection);
// A new chat line of a room member: its sequence number, and its latency if it was timed.
struct Delivery {
  std::uint64_t seq;
  std::optional<std::int64_t> latency_ns;
};
// Counts a chat line received on a joined connection: its sender's track (loss, order,
// duplicates), and, for a new line, arrival and latency in the phase's window. The new
// line, or nullopt for a repeat or a line that is no room member's (then counted unknown).
std::optional<Delivery> count_chat_line(WorkerTraffic& traffic, Connection& connection, std::string_view line,
                                        std::int64_t now, const Phase& phase);

// Broadcast and chat: samples the server's memory, ramps to --clients in one step, and
// samples it again; fills "ramp" and "memory".
void ramp_all(Engine& engine, boost::json::object& report, Progress& progress);

// The report's "ramp": the seconds spent connecting, the connections open after, the rate.
boost::json::object ramp_json(double seconds, std::uint64_t connected);

// Samples the server's memory at the current client count into report["memory"].
void sample_step(Engine& engine, std::vector<MemorySample>& steps, boost::json::object& report);

// One reading of the clock, the server's and loadgen's CPU time and every core's ticks.
struct CpuWindow {
  Clock::time_point wall;
  std::optional<CpuTimes> server;
  CpuTimes self;
  std::vector<CoreTicks> cores;
  std::int64_t throttled_ns = 0;           // cgroup_throttled_ns()
  std::optional<CgroupCpu> server_cgroup;  // chat --server-cgroup; nullopt without it
  static CpuWindow now(pid_t pid, const std::string& server_cgroup = {}) {
    return {Clock::now(),
            pid > 0 ? process_cpu(pid) : std::nullopt,
            self_cpu(),
            read_core_ticks(),
            cgroup_throttled_ns(),
            server_cgroup.empty() ? std::nullopt : read_cgroup_cpu(server_cgroup)};
  }
};

// What the processes and the cores did between two readings.
struct CpuUse {
  double loadgen_fraction = 0;
  std::optional<double> server_fraction;
  std::optional<double> server_cores;  // the server's CPU s per s of window: cores' worth used
  std::vector<CoreBusy> cores;
  // How busy loadgen's own cores were with anything but loadgen (other processes, kernel
  // threads such as ksoftirqd, interrupts in idle), as a fraction of those cores.
  double others_on_loadgen_cores = 0;
  double loadgen_throttled_s = 0;                 // a CPU quota held loadgen back this long
  std::optional<CgroupThrottling> server_cgroup;  // what the server's cgroup quota did (--server-cgroup)
};

// Fills report["cpu"] for the window [a, b], warns if loadgen was saturated, and returns
// the CPU fractions and per-core busy time of the window.
CpuUse fill_cpu(boost::json::object& report, const CpuWindow& a, const CpuWindow& b, pid_t server_pid);

// The keys every mode ends with: clients_connected, and limit_hit if a limit was hit.
void finish_common(Engine& engine, boost::json::object& report);

void warn(boost::json::object& report, const std::string& text);

// Broadcast and chat: waits until every sent line has arrived everywhere it
// should, or every connection is gone, or the drain deadline passed.
void drain(Engine& engine, const Traffic& traffic, std::uint64_t expected_unique, Progress& progress);
// A slice of a global run cannot know what the other slices sent: it waits until no line
// has arrived for `quiet`, or every connection is gone, or the drain deadline passed.
void drain_until_quiet(Engine& engine, const Traffic& traffic, Clock::duration quiet, Progress& progress);

// Many hosts (docs/distributed.md): a client's id in the global run is its slice's offset
// plus its index in this process; a process runs a slice when --clients-total is given.
inline std::uint32_t global_id(const Options& options, const Connection& connection) {
  return options.client_offset + connection.id;
}
inline bool sliced(const Options& options) { return options.clients_total > 0; }

// How far this process's UNIX clock reads ahead of the run's reference clock, in ms (for
// --start-at): the injected --clock-offset-ms less the measured --clock-offset-ns.
double reference_ahead_ms(const Options& options);
// Sets the clock this process's lines carry (phase.line_clock_offset_ns, reference_clock)
// and the senders it times exactly (own_first, own_end), from --clock-offset-ms and the
// measured --clock-offset-ns/--clock-offset-bound-ns. Returns reference_ahead_ms().
double set_line_clock(Phase& phase, const Options& options);
// The report's "clock" block of a mode that times lines between slices: which clock the
// lines carry, which pairs are timed, this slice's offsets, and its cross-slice samples.
boost::json::object clock_json(const Options& options, boost::json::value cross_samples,
                               boost::json::value cross_min_latency_us, std::uint64_t untimed);

// The least latency of a window's cross-slice samples, in µs; null without any.
boost::json::value cross_slice_min_latency_us(const WindowCounts& counts);

// One receiver's entry of loss_detail.receivers (docs/loadgen.md, "loss_detail"): for each
// sender it tracks, the next sequence number it expects (the highest heard + 1, 0: none)
// and the gaps below it, which per-sender FIFO means will never be filled.
boost::json::object receiver_loss_json(const Options& options, const Connection& connection);

// The steady-clock time at which the UNIX clock, read with --clock-offset-ms added,
// reaches unix_ms.
std::int64_t steady_ns_at_unix_ms(std::int64_t unix_ms, double clock_offset_ms);
// The UNIX clock less the steady clock, now.
std::int64_t unix_minus_steady_ns();
// The UNIX clock now, in ms, with --clock-offset-ms added.
std::int64_t unix_ms_now(double clock_offset_ms);

}  // namespace loadgen
