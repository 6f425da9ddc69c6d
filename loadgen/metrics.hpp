// Measurement primitives: the open-loop schedule, the latency recorder, per-sender loss
// tracking, the least-squares slope and /proc sampling. No I/O except /proc reads.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace loadgen {

using Clock = std::chrono::steady_clock;

// Nanoseconds on the steady clock; chat lines carry this so any thread of this process
// can compute latency from another thread's send time.
inline std::int64_t to_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// The open-loop schedule of wrk2: send k is due at start + k / rate, whatever happened to
// sends before it, so a stalled server shows up as latency and not as a lower send rate.
// With a tick, each time is rounded up to the next multiple of the tick on the steady
// clock: every sender's sends fall on one shared grid, so a worker wakes once per tick
// for all of them instead of once per send (docs/loadgen.md, "The tick and receive
// times"). The rounded time is the intended time: the line carries it and latency starts
// from it.
class OpenLoopSchedule {
 public:
  OpenLoopSchedule(std::int64_t start_ns, double rate_per_s, std::int64_t tick_ns = 0)
      : start_ns_(start_ns), rate_(rate_per_s), tick_ns_(tick_ns) {}
  // Intended send time of send number k (0-based).
  std::int64_t intended_ns(std::uint64_t k) const { return on_grid(exact_ns(k)); }
  // How many sends are due at or before now_ns (i.e. the k of the first send not yet due).
  std::uint64_t due_by(std::int64_t now_ns) const;

 private:
  std::int64_t exact_ns(std::uint64_t k) const {
    return start_ns_ + static_cast<std::int64_t>(static_cast<double>(k) * 1e9 / rate_);
  }
  std::int64_t on_grid(std::int64_t t) const {
    if (tick_ns_ <= 0) return t;
    const std::int64_t r = t % tick_ns_;  // steady-clock times are positive
    return r == 0 ? t : t + (tick_ns_ - r);
  }

  std::int64_t start_ns_;
  double rate_;
  std::int64_t tick_ns_;
};

// Log-linear histogram of non-negative values (nanoseconds here): exact below 128, then
// 128 sub-buckets per power of two, so a reported percentile is within 1/256 (< 0.4%) of
// the true nearest-rank value. Fixed size, no allocation after construction.
class LatencyRecorder {
 public:
  static constexpr int sub_bucket_bits = 7;
  static constexpr std::int64_t sub_buckets = std::int64_t{1} << sub_bucket_bits;

  LatencyRecorder();
  void record(std::int64_t value);
  void merge(const LatencyRecorder& other);
  std::uint64_t count() const { return count_; }
  std::int64_t max() const { return max_; }
  // Nearest-rank percentile, q in (0, 1]; 0 when empty.
  std::int64_t percentile(double q) const;
  // Non-empty buckets in order, as (bucket index, count): what a report carries so that
  // reports can be merged exactly (merge.hpp). Rebuilt with add_bucket and raise_max.
  std::vector<std::pair<std::size_t, std::uint64_t>> nonempty_buckets() const;
  void add_bucket(std::size_t bucket, std::uint64_t count);
  void raise_max(std::int64_t value) { max_ = std::max(max_, value); }

  static std::size_t bucket_of(std::int64_t value);
  static std::int64_t bucket_low(std::size_t bucket);
  static std::int64_t bucket_high(std::size_t bucket);  // inclusive

 private:
  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::int64_t max_ = 0;
};

// Loss accounting for one (receiver, sender) pair. TCP and a correct server deliver a
// sender's lines in order exactly once; anything else is counted. A 64-line window below
// the next expected sequence number tells a late line (reordered) from a repeat
// (duplicated); a line older than the window counts as reordered.
struct SenderTrack {
  std::uint64_t next_expected = 0;
  std::uint64_t window = 0;  // bit i set: sequence next_expected - 1 - i was received
  std::uint64_t received = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t reordered = 0;

  void on_sequence(std::uint64_t seq);
  std::uint64_t unique_received() const { return received - duplicated; }

  // The lines of a sender that sent `sent` lines and that this receiver does not have,
  // split by what the receiver can know. Per-sender FIFO means a missing line below a
  // later line that did arrive is a gap the server will never fill: lost. A missing line
  // after the last one received may still be queued at the server: outstanding, unless
  // the server closed this receiver, in which case nothing more can arrive: lost.
  struct Missing {
    std::uint64_t lost = 0, outstanding = 0;
  };
  Missing missing(std::uint64_t sent, bool receiver_open) const;
};

struct LossTotals {
  std::uint64_t received = 0, duplicated = 0, reordered = 0;
  std::uint64_t lost = 0, outstanding = 0, receivers_with_loss = 0, receivers_with_outstanding = 0;

  // Adds one receiver's missing lines (the sum over the senders it tracks).
  void add_receiver(const SenderTrack::Missing& missing) {
    lost += missing.lost;
    outstanding += missing.outstanding;
    if (missing.lost > 0) ++receivers_with_loss;
    if (missing.outstanding > 0) ++receivers_with_outstanding;
  }
  // Adds the totals of other receivers (another thread's).
  LossTotals& operator+=(const LossTotals& other) {
    received += other.received;
    duplicated += other.duplicated;
    reordered += other.reordered;
    lost += other.lost;
    outstanding += other.outstanding;
    receivers_with_loss += other.receivers_with_loss;
    receivers_with_outstanding += other.receivers_with_outstanding;
    return *this;
  }
};

// Chat loss over rooms of room_size consecutive client ids (room r: ids [r*K, (r+1)*K)).
// One definition for a single process (chat.cpp) and for merged reports (merge.cpp):
// given what every sender sent (an id absent from sent_by never joined and sent nothing),
// expected = sum over senders of sent x (joined members of its room - 1), and each
// receiver's tracks split what it lacks into lost and outstanding (SenderTrack::missing).
class ChatLossCounter {
 public:
  ChatLossCounter(std::map<std::uint32_t, std::uint64_t> sent_by, std::uint32_t room_size);
  // One receiver: tracks[i] is its track of sender track_base + i; open: the server had not
  // closed it. duplicated and reordered are the receiver's totals over its tracks.
  void add_receiver(std::uint32_t id, bool open, std::uint32_t track_base, const std::vector<SenderTrack>& tracks);
  // Adds the receivers another counter of the same senders counted (another thread's).
  void add_receivers_of(const ChatLossCounter& other) {
    loss += other.loss;
    receivers += other.receivers;
    receivers_disconnected += other.receivers_disconnected;
  }

  LossTotals loss;
  std::uint64_t sent = 0, expected = 0, receivers = 0, receivers_disconnected = 0;

 private:
  std::map<std::uint32_t, std::uint64_t> sent_by_;
};

// Deliveries counted by arrival time over the window [start_ns, end_ns): the rate at which
// the server actually got lines out. A server that falls behind shows a lower figure here
// than the offered rate, however many of the window's lines it delivers later.
struct ArrivalWindow {
  std::int64_t start_ns = 0, end_ns = 0;
  std::uint64_t arrivals = 0;

  void on_arrival(std::int64_t arrival_ns) {
    if (arrival_ns >= start_ns && arrival_ns < end_ns) ++arrivals;
  }
  // Arrivals per second of the window's length; 0 for an empty window.
  double per_second() const {
    return end_ns > start_ns ? static_cast<double>(arrivals) * 1e9 / static_cast<double>(end_ns - start_ns) : 0.0;
  }
};

// Broadcast completion: per message, the time until its last receiver had it. One
// definition for a single process (broadcast.cpp) and for merged reports (merge.cpp).
struct BroadcastCompletion {
  LatencyRecorder latency;       // per complete message: its slowest receiver's latency
  std::uint64_t incomplete = 0;  // messages some receiver lacks, or none of whose receivers was timed
};
// Messages [0, messages): message m is complete when all `receivers` had it (had[m]) and
// one of them was timed (slowest_ns[m] is not INT64_MIN).
BroadcastCompletion broadcast_completion(std::uint64_t messages, std::uint64_t receivers,
                                         const std::vector<std::uint64_t>& had,
                                         const std::vector<std::int64_t>& slowest_ns);

// Least-squares slope of y over x; nullopt when x has fewer than two distinct values.
std::optional<double> least_squares_slope(const std::vector<double>& x, const std::vector<double>& y);

// The kernel's slab caches (/proc/slabinfo, readable by root only): name -> bytes of its
// active objects, each counted at its share of its slab (pages per slab x page size /
// objects per slab), so that the caches add up to what /proc/meminfo counts as Slab.
using SlabCaches = std::map<std::string, std::uint64_t>;
struct SlabInfo {
  SlabCaches active;  // empty when /proc/slabinfo cannot be read
  // Slots of allocated slabs that hold no object, at the same share: memory already taken
  // from the free pool that new objects fill before any new slab is allocated.
  std::uint64_t slack_bytes = 0;
  // name -> bytes of the slabs each CPU holds for itself (SLUB's /sys/kernel/slab/NAME/
  // cpu_slabs: the active slab and the per-CPU partial ones). Their free slots are counted
  // active by /proc/slabinfo, so objects put there show in no reading: the most a ramp can
  // add unseen. Empty where the kernel does not say.
  SlabCaches cpu_reserve;
};
SlabInfo read_slab_info();
inline SlabCaches read_slab_caches() { return read_slab_info().active; }
// Whether the kernel accounts a cache as reclaimable (SReclaimable): SLUB's
// /sys/kernel/slab/NAME/reclaim_account. False when the kernel does not say.
bool slab_cache_reclaimable(const std::string& name);

// One reading of the server process, of loadgen itself and of the system, in bytes (or counts).
struct MemorySample {
  std::uint64_t clients = 0;
  std::optional<std::uint64_t> rss_bytes, pss_bytes, anonymous_bytes, vsz_bytes, threads, pte_bytes;
  std::optional<std::uint64_t> mem_available_bytes, kernel_stack_bytes, slab_bytes, sock_mem_bytes;
  std::optional<std::uint64_t> mem_free_bytes, anon_pages_bytes, page_tables_bytes, slab_reclaimable_bytes;
  std::optional<std::uint64_t> page_cache_bytes;    // Cached + Buffers: file pages, which come and go with the machine
  std::optional<std::uint64_t> per_cpu_free_bytes;  // free pages in the per-CPU lists, which MemFree leaves out
  std::optional<std::uint64_t> slab_slack_bytes;    // SlabInfo::slack_bytes; nullopt without /proc/slabinfo
  std::optional<std::uint64_t> loadgen_rss_bytes, loadgen_pte_bytes;  // the client's process
  SlabCaches slab_caches;        // kept for the per-cache slopes; not written per step
  SlabCaches slab_cpu_reserve;  // SlabInfo::cpu_reserve
};

// Reads /proc/PID/status, /proc/PID/smaps_rollup, /proc/self/status, /proc/meminfo,
// /proc/net/sockstat and /proc/slabinfo. pid 0 samples the system and loadgen only.
MemorySample sample_memory(pid_t pid);

// The kernel's stack per task (THREAD_SIZE): /proc/meminfo's KernelStack over the tasks
// /proc/loadavg counts, rounded to the nearest power of two (the ratio is off by the few
// per-CPU idle tasks /proc/loadavg leaves out). nullopt if either cannot be read.
std::optional<std::uint64_t> kernel_stack_per_task();

// What the client's end of the connections held in the kernel, per slab cache: the drop
// when loadgen reset its connections while the server was stopped (idle.cpp).
struct ClientEnd {
  std::uint64_t connections = 0;
  SlabCaches dropped_bytes;  // whole drop per cache, not yet per connection
  double settle_s = 0;
};

struct CpuTimes {
  double user_s = 0, sys_s = 0;
};
// User and system CPU seconds of a process (/proc/PID/stat); nullopt if it is gone.
std::optional<CpuTimes> process_cpu(pid_t pid);
// False once the process has exited, reaped or not (a zombie still has a /proc entry).
bool process_alive(pid_t pid);
// This process (getrusage), all threads.
CpuTimes self_cpu();

// The CPUs a process may run on (sched_getaffinity); pid 0 is this process. At least 1.
unsigned allowed_cpu_count(pid_t pid = 0);
// Whether the process may run on this CPU.
bool allowed_cpu(int cpu, pid_t pid = 0);

// CPU seconds over a window as a fraction of the CPUs the process may run on:
// cpu_seconds / (window_s x allowed_cpu_count(pid)). 1.0 means every core it was given
// was busy with it for the whole window. 0 for an empty window.
double cpu_fraction(double cpu_seconds, double window_s, pid_t pid);

// THE definition of loadgen's own CPU fraction (cpu_fraction of this process): the
// saturation warning, cpu.loadgen_saturated and the ceiling search all use it.
inline double loadgen_cpu_fraction(double cpu_seconds, double window_s) {
  return cpu_fraction(cpu_seconds, window_s, 0);
}
// Above this, a measured window may measure loadgen itself: warning and loadgen_saturated.
constexpr double loadgen_saturated_fraction = 0.9;

// The calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), in ns.
std::int64_t thread_cpu_ns();

// How long a CPU quota (cgroup v2 cpu.max, v1 cpu.cfs_quota_us) has held back this
// process's cgroup or any of its ancestors, in ns, summed over them; 0 without one.
std::int64_t cgroup_throttled_ns();

// A cgroup's CPU controller, read from its directory: its quota and the cumulative
// throttling counters of its cpu.stat. Both cgroup versions: v2 (cpu.max "QUOTA PERIOD",
// cpu.stat throttled_usec) and v1 (cpu.cfs_quota_us, cpu.cfs_period_us, cpu.stat
// throttled_time in ns).
struct CgroupCpu {
  std::uint64_t periods = 0, throttled_periods = 0;  // nr_periods, nr_throttled
  std::int64_t throttled_ns = 0;
  std::optional<double> quota_cores;  // quota / period; nullopt: no quota ("max", -1)
  std::int64_t period_us = 0;
};
// nullopt when dir holds no cpu.stat or no quota file: not a cgroup of the CPU controller.
std::optional<CgroupCpu> read_cgroup_cpu(const std::string& dir);

// What a cgroup's quota did between two readings: periods in which the cgroup ran, those
// in which the quota ran out and held it back, and for how long it was held back.
struct CgroupThrottling {
  std::uint64_t periods = 0, throttled_periods = 0;
  double throttled_s = 0;
  std::optional<double> quota_cores;  // the later reading's
  std::int64_t period_us = 0;
};
CgroupThrottling cgroup_throttling(const CgroupCpu& before, const CgroupCpu& after);

// One core's cumulative idle and stolen time from a "cpuN" line of /proc/stat, in clock
// ticks. Busy time is the rest of the wall clock: the busy fields themselves are sampled at
// the scheduler tick on kernels with tick-based accounting (this one), which aliases with
// timer-driven work (a process 29% busy on a 1 ms grid showed 59% there, one 8% on a 250 µs
// grid 0%), while a tickless kernel measures idle time exactly (NO_HZ_IDLE).
struct CoreTicks {
  int cpu = -1;
  std::uint64_t idle = 0;   // idle + iowait
  std::uint64_t steal = 0;  // taken by the hypervisor
};
// Every online core; empty if /proc/stat cannot be read.
std::vector<CoreTicks> read_core_ticks();

// Per-core fractions of a window between two read_core_ticks() readings window_s apart.
struct CoreBusy {
  int cpu = -1;
  double busy = 0, steal = 0;  // busy: not idle and not stolen, softirq and irq included
};
std::vector<CoreBusy> core_busy(const std::vector<CoreTicks>& before, const std::vector<CoreTicks>& after,
                                double window_s);

// Value of "key:" in a /proc file of "key: value [kB]" lines, in bytes if it had kB.
std::optional<std::uint64_t> proc_field(const std::string& path, const std::string& key);

}  // namespace loadgen
