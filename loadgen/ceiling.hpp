// The ceiling search of `loadgen chat --find-ceiling`: which rates to measure and what
// the measurements mean. Measuring one rate is the scenario's business (run_chat hands
// in a function, rate in, StepResult out), so this file knows nothing of engines or sockets.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "metrics.hpp"

namespace loadgen {

// One fresh measured window at one per-client rate, after the drain.
struct StepResult {
  double rate_per_client = 0;
  double offered_per_s = 0;     // deliveries per second the schedule asked for
  double deliveries_per_s = 0;  // deliveries that arrived during the window, per second
  // The deliveries one send makes (its room's fan-out), per second of window: whether a
  // send falls just inside or outside the window moves deliveries_per_s by this much.
  double granularity_per_s = 0;
  std::optional<double> p99_us;                   // nullopt: nothing of the window was delivered
  std::uint64_t sends = 0, late_sends = 0;        // sends of the window; late: > 1 ms behind schedule
  std::uint64_t late_sends_stalled = 0;           // late only because loadgen's thread was off its core
  std::uint64_t lost = 0;                         // lines that became lost during this step
  std::uint64_t outstanding = 0;                  // lines still missing after the drain
  std::optional<double> server_cpu_fraction;      // nullopt without --server-pid
  std::optional<double> server_cores;             // the server's CPU s per s of window; nullopt without --server-pid
  std::optional<CgroupThrottling> server_cgroup;  // what its cgroup's quota did; nullopt without --server-cgroup
  double loadgen_cpu_fraction = 0;
  double others_on_loadgen_cores = 0;  // CpuUse::others_on_loadgen_cores
  double loadgen_throttled_s = 0;      // CpuUse::loadgen_throttled_s
  std::vector<CoreBusy> cores;
  bool server_died = false;    // the server exited, or closed every connection, during the step
  boost::json::object detail;  // the full rate_steps[] entry of this window
};

// What a rate must meet to count as sustained (docs/loadgen.md, "Finding the ceiling").
struct CeilingCriteria {
  double min_delivered_fraction = 0.99;  // deliveries/s over offered, less one send's granularity
  double p99_bar_us = 100'000;
  double max_late_fraction = 0.01;        // late sends loadgen caused (not stalled) over sends
  double max_loadgen_cpu_fraction = 0.7;  // above this loadgen has no headroom left
  // Sends late while loadgen was off its core are excused only while other work used at
  // most this much of loadgen's cores: past it, that work may be the test's own (ksoftirqd
  // receiving for loadgen's sockets), so they count. Nor are they while a CPU quota held
  // loadgen back: that is loadgen short of CPU.
  double max_others_on_loadgen_cores = 0.05;
};

struct CeilingOptions {
  double start_rate = 10;   // per client
  double growth = 2;        // factor between rates while no bracket is found
  double precision = 1.05;  // stop bisecting once failed rate / passed rate <= this
  unsigned max_steps = 14;  // measured windows, the whole search
  CeilingCriteria criteria;
};

// What stopped a rate, weakest first: p99 over the bar while the server kept up
// (latency), the server falling behind (too slow, or lines still outstanding), lines
// lost, or loadgen itself (over its CPU share, or late sends): ceiling.limited_by
// (docs/loadgen.md, "Finding the ceiling").
enum class Limit { none, latency, server, loss, loadgen };
const char* limit_name(Limit limit);

struct Verdict {
  bool passed = false;
  Limit limit = Limit::none;  // none when passed, or when the server died
  std::string reason;         // every criterion that failed, "" when passed
  bool late_only = false;     // late sends were the one criterion that failed
};
Verdict judge(const StepResult& step, const CeilingCriteria& criteria);

struct CeilingResult {
  std::vector<StepResult> steps;  // in the order measured
  std::vector<Verdict> verdicts;
  std::vector<bool> superseded;            // failed on late sends alone and measured once more right after
  std::optional<std::size_t> ceiling;      // the highest passing rate below every failing one
  std::optional<std::size_t> first_above;  // the lowest failing rate: what it failed on is limited_by
  bool server_died = false;
};

// Measures start_rate, then rises (or falls, if it failed) by `growth` until a rate passes
// and a higher one fails, then bisects geometrically inside that bracket. A rate that
// fails on late sends alone is measured once more, and the second window decides. settle() runs
// before every step and returns false if the server is gone, which ends the search.
CeilingResult find_ceiling(const CeilingOptions& options, const std::function<StepResult(double rate)>& measure,
                           const std::function<bool()>& settle);

// Deliveries per second per core the server used at its ceiling: the ceiling's
// deliveries/s over the server's CPU seconds per second there (docs/loadgen.md, "Capacity
// per server core"). Published only where the search was stopped by the server (it fell
// behind, or its p99 went over the bar): a search stopped by loadgen measured loadgen, one
// stopped by loss measured a broken server, and neither says what a core of it delivers.
struct PerCoreCapacity {
  std::optional<double> deliveries_per_core_s;
  std::string withheld;  // why there is no figure; "" when there is one
};
PerCoreCapacity per_server_core(const CeilingResult& result);

// The report's "ceiling" object.
boost::json::object ceiling_json(const CeilingResult& result);

}  // namespace loadgen
