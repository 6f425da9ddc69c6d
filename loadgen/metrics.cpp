#include "metrics.hpp"

#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace loadgen {

std::uint64_t OpenLoopSchedule::due_by(std::int64_t now_ns) const {
  // Rounding up to the grid keeps the order of sends, so this counts the exact times at or
  // before the last grid point not after now.
  if (tick_ns_ > 0) now_ns -= now_ns % tick_ns_;
  if (now_ns < start_ns_) return 0;
  // Start from the floating-point estimate, then settle it against exact_ns() itself so
  // the two never disagree by a rounding step.
  auto k = static_cast<std::uint64_t>(static_cast<double>(now_ns - start_ns_) * rate_ / 1e9);
  while (k > 0 && exact_ns(k - 1) > now_ns) --k;
  while (exact_ns(k) <= now_ns) ++k;
  return k;
}

LatencyRecorder::LatencyRecorder() : buckets_(bucket_of(INT64_MAX) + 1, 0) {}

std::size_t LatencyRecorder::bucket_of(std::int64_t value) {
  if (value < sub_buckets) return static_cast<std::size_t>(std::max<std::int64_t>(value, 0));
  const int exponent = std::bit_width(static_cast<std::uint64_t>(value)) - 1;  // >= sub_bucket_bits
  const int shift = exponent - sub_bucket_bits;
  const std::int64_t sub = value >> shift;  // in [sub_buckets, 2 * sub_buckets)
  return static_cast<std::size_t>(shift * sub_buckets + sub);
}

std::int64_t LatencyRecorder::bucket_low(std::size_t bucket) {
  const auto b = static_cast<std::int64_t>(bucket);
  if (b < sub_buckets) return b;
  const std::int64_t shift = b / sub_buckets - 1;
  const std::int64_t sub = b % sub_buckets + sub_buckets;
  return sub << shift;
}

std::int64_t LatencyRecorder::bucket_high(std::size_t bucket) {
  const auto b = static_cast<std::int64_t>(bucket);
  if (b < sub_buckets) return b;
  const std::int64_t shift = b / sub_buckets - 1;
  const std::int64_t sub = b % sub_buckets + sub_buckets;
  return ((sub + 1) << shift) - 1;
}

void LatencyRecorder::record(std::int64_t value) {
  ++buckets_[bucket_of(value)];
  ++count_;
  max_ = std::max(max_, value);
}

void LatencyRecorder::merge(const LatencyRecorder& other) {
  for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
}

std::int64_t LatencyRecorder::percentile(double q) const {
  if (count_ == 0) return 0;
  const auto rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      // The middle of the bucket halves the worst-case error; never report above the max.
      const std::int64_t low = bucket_low(i), high = bucket_high(i);
      return std::min(low + (high - low) / 2, max_);
    }
  }
  return max_;
}

std::vector<std::pair<std::size_t, std::uint64_t>> LatencyRecorder::nonempty_buckets() const {
  std::vector<std::pair<std::size_t, std::uint64_t>> out;
  for (std::size_t i = 0; i < buckets_.size(); ++i)
    if (buckets_[i] > 0) out.emplace_back(i, buckets_[i]);
  return out;
}

void LatencyRecorder::add_bucket(std::size_t bucket, std::uint64_t count) {
  if (bucket >= buckets_.size())
    throw std::out_of_range("latency histogram bucket " + std::to_string(bucket) + " out of range");
  buckets_[bucket] += count;
  count_ += count;
}

void SenderTrack::on_sequence(std::uint64_t seq) {
  ++received;
  if (seq >= next_expected) {
    const std::uint64_t shift = seq - next_expected + 1;
    window = shift >= 64 ? 0 : window << shift;
    window |= 1;
    next_expected = seq + 1;
    return;
  }
  const std::uint64_t distance = next_expected - 1 - seq;
  if (distance >= 64) {
    ++reordered;  // too old to tell; a correct server never gets here
  } else if ((window >> distance) & 1) {
    ++duplicated;
  } else {
    window |= std::uint64_t{1} << distance;
    ++reordered;
  }
}

SenderTrack::Missing SenderTrack::missing(std::uint64_t sent, bool receiver_open) const {
  // Everything below next_expected that never arrived, late (reordered) arrivals excluded.
  // Saturating: a repeat older than the window is counted as a reordered line, not a repeat.
  const std::uint64_t unique = unique_received();
  const std::uint64_t gaps = next_expected > unique ? next_expected - unique : 0;
  const std::uint64_t tail = sent > next_expected ? sent - next_expected : 0;
  if (!receiver_open) return {gaps + tail, 0};
  return {gaps, tail};
}

ChatLossCounter::ChatLossCounter(std::map<std::uint32_t, std::uint64_t> sent_by, std::uint32_t room_size)
    : sent_by_(std::move(sent_by)) {
  std::map<std::uint32_t, std::uint64_t> room_sent, room_members;
  for (const auto& [id, n] : sent_by_) {
    room_sent[id / room_size] += n;
    room_members[id / room_size] += 1;
    sent += n;
  }
  for (const auto& [room, n] : room_sent) expected += (room_members[room] - 1) * n;
}

void ChatLossCounter::add_receiver(std::uint32_t id, bool open, std::uint32_t track_base,
                                   const std::vector<SenderTrack>& tracks) {
  ++receivers;
  if (!open) ++receivers_disconnected;
  SenderTrack::Missing missing;
  for (std::uint32_t slot = 0; slot < tracks.size(); ++slot) {
    const SenderTrack& track = tracks[slot];
    loss.received += track.received;
    loss.duplicated += track.duplicated;
    loss.reordered += track.reordered;
    const std::uint32_t sender = track_base + slot;
    if (sender == id) continue;  // a client does not hear itself
    const auto it = sent_by_.find(sender);
    const auto m = track.missing(it == sent_by_.end() ? 0 : it->second, open);
    missing.lost += m.lost;
    missing.outstanding += m.outstanding;
  }
  loss.add_receiver(missing);
}

BroadcastCompletion broadcast_completion(std::uint64_t messages, std::uint64_t receivers,
                                         const std::vector<std::uint64_t>& had,
                                         const std::vector<std::int64_t>& slowest_ns) {
  BroadcastCompletion completion;
  for (std::uint64_t m = 0; m < messages; ++m) {
    if (receivers > 0 && had[m] == receivers && slowest_ns[m] != INT64_MIN)
      completion.latency.record(slowest_ns[m]);
    else
      ++completion.incomplete;
  }
  return completion;
}

std::optional<double> least_squares_slope(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = std::min(x.size(), y.size());
  if (n < 2) return std::nullopt;
  double mean_x = 0, mean_y = 0;
  for (std::size_t i = 0; i < n; ++i) {
    mean_x += x[i];
    mean_y += y[i];
  }
  mean_x /= static_cast<double>(n);
  mean_y /= static_cast<double>(n);
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mean_x) * (y[i] - mean_y);
    sxx += (x[i] - mean_x) * (x[i] - mean_x);
  }
  if (sxx == 0) return std::nullopt;
  return sxy / sxx;
}

std::optional<std::uint64_t> proc_field(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  const std::string prefix = key + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream fields(line.substr(prefix.size()));
    std::uint64_t value = 0;
    std::string unit;
    if (!(fields >> value)) return std::nullopt;
    fields >> unit;
    return unit == "kB" ? value * 1024 : value;
  }
  return std::nullopt;
}

// TCP socket buffer memory of the whole system: "TCP: ... mem PAGES" in /proc/net/sockstat.
static std::optional<std::uint64_t> tcp_socket_memory() {
  std::ifstream in("/proc/net/sockstat");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("TCP:", 0) != 0) continue;
    std::istringstream fields(line.substr(4));
    std::string name;
    std::uint64_t value = 0;
    while (fields >> name >> value)
      if (name == "mem") return value * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  }
  return std::nullopt;
}

// Free pages held in the per-CPU page lists: the "count:" of every pageset in
// /proc/zoneinfo. MemFree leaves them out, and since Linux 6.7 those lists grow to hold
// what was just freed (tens of MB here) and give it back over seconds.
static std::optional<std::uint64_t> per_cpu_free_pages() {
  std::ifstream in("/proc/zoneinfo");
  if (!in) return std::nullopt;
  std::string word;
  std::uint64_t pages = 0;
  while (in >> word)
    if (word == "count:") {
      std::uint64_t n = 0;
      if (in >> n) pages += n;
    }
  return pages * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

SlabInfo read_slab_info() {
  SlabInfo info;
  std::ifstream in("/proc/slabinfo");
  std::string line;
  const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  // "name active_objs num_objs objsize objperslab pagesperslab : tunables ..."; the two
  // header lines do not parse as numbers and are skipped.
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name;
    std::uint64_t active = 0, total = 0, objsize = 0, per_slab = 0, pages = 0;
    if (!(fields >> name >> active >> total >> objsize >> per_slab >> pages) || per_slab == 0) continue;
    info.active[name] += active * pages * page / per_slab;
    if (total > active) info.slack_bytes += (total - active) * pages * page / per_slab;
    std::ifstream cpu("/sys/kernel/slab/" + name + "/cpu_slabs");  // "COUNT N0=COUNT ..."
    std::uint64_t cpu_slabs = 0;
    if (cpu >> cpu_slabs) info.cpu_reserve[name] += cpu_slabs * pages * page;
  }
  return info;
}

bool slab_cache_reclaimable(const std::string& name) {
  std::ifstream in("/sys/kernel/slab/" + name + "/reclaim_account");
  int flag = 0;
  return (in >> flag) && flag == 1;
}

std::optional<std::uint64_t> kernel_stack_per_task() {
  const auto stacks = proc_field("/proc/meminfo", "KernelStack");
  std::ifstream in("/proc/loadavg");
  std::string field;
  for (int i = 0; i < 4 && in >> field; ++i) {
  }  // the fourth field: running/total tasks
  const auto slash = field.find('/');
  if (!stacks || slash == std::string::npos) return std::nullopt;
  const std::uint64_t tasks = std::strtoull(field.c_str() + slash + 1, nullptr, 10);
  if (tasks == 0) return std::nullopt;
  const double ratio = static_cast<double>(*stacks) / static_cast<double>(tasks);
  return std::uint64_t{1} << static_cast<int>(std::lround(std::log2(std::max(ratio, 1.0))));
}

MemorySample sample_memory(pid_t pid) {
  MemorySample s;
  if (pid > 0) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/";
    s.rss_bytes = proc_field(dir + "status", "VmRSS");
    s.vsz_bytes = proc_field(dir + "status", "VmSize");
    s.threads = proc_field(dir + "status", "Threads");
    s.pte_bytes = proc_field(dir + "status", "VmPTE");
    s.pss_bytes = proc_field(dir + "smaps_rollup", "Pss");
    s.anonymous_bytes = proc_field(dir + "smaps_rollup", "Anonymous");
    if (!s.rss_bytes) s.rss_bytes = proc_field(dir + "smaps_rollup", "Rss");
  }
  s.mem_available_bytes = proc_field("/proc/meminfo", "MemAvailable");
  s.kernel_stack_bytes = proc_field("/proc/meminfo", "KernelStack");
  s.slab_bytes = proc_field("/proc/meminfo", "Slab");
  s.sock_mem_bytes = tcp_socket_memory();
  s.mem_free_bytes = proc_field("/proc/meminfo", "MemFree");
  s.per_cpu_free_bytes = per_cpu_free_pages();
  const auto cached = proc_field("/proc/meminfo", "Cached"), buffers = proc_field("/proc/meminfo", "Buffers");
  if (cached && buffers) s.page_cache_bytes = *cached + *buffers;
  s.anon_pages_bytes = proc_field("/proc/meminfo", "AnonPages");
  s.page_tables_bytes = proc_field("/proc/meminfo", "PageTables");
  s.slab_reclaimable_bytes = proc_field("/proc/meminfo", "SReclaimable");
  s.loadgen_rss_bytes = proc_field("/proc/self/status", "VmRSS");
  s.loadgen_pte_bytes = proc_field("/proc/self/status", "VmPTE");
  auto slabs = read_slab_info();
  if (!slabs.active.empty()) s.slab_slack_bytes = slabs.slack_bytes;
  s.slab_caches = std::move(slabs.active);
  s.slab_cpu_reserve = std::move(slabs.cpu_reserve);
  return s;
}

std::optional<CpuTimes> process_cpu(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // The command name may hold spaces and parentheses; fields resume after the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  double ticks[2] = {0, 0};
  for (int index = 3; fields >> field; ++index) {  // index: the field number in proc(5)
    if (index == 14) ticks[0] = std::stod(field);
    if (index == 15) {
      ticks[1] = std::stod(field);
      const auto hz = static_cast<double>(sysconf(_SC_CLK_TCK));
      return CpuTimes{ticks[0] / hz, ticks[1] / hz};
    }
  }
  return std::nullopt;
}

bool process_alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  const char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

unsigned allowed_cpu_count(pid_t pid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(pid, sizeof set, &set) != 0) return 1;
  return static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
}

bool allowed_cpu(int cpu, pid_t pid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  return cpu >= 0 && cpu < CPU_SETSIZE && sched_getaffinity(pid, sizeof set, &set) == 0 && CPU_ISSET(cpu, &set);
}

double cpu_fraction(double cpu_seconds, double window_s, pid_t pid) {
  if (window_s <= 0) return 0;
  return cpu_seconds / (window_s * static_cast<double>(allowed_cpu_count(pid)));
}

std::int64_t thread_cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return std::int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

namespace {

// Value of "key value" in a cgroup stat file, or 0.
std::int64_t stat_value(const std::string& path, std::string_view key) {
  std::ifstream in(path);
  std::string name;
  std::int64_t value = 0;
  while (in >> name >> value)
    if (name == key) return value;
  return 0;
}

// Whether a comma-separated list ("cpu,cpuacct") holds word.
bool has_word(std::string_view list, std::string_view word) {
  for (std::size_t start = 0; start <= list.size();) {
    const std::size_t end = std::min(list.find(',', start), list.size());
    if (list.substr(start, end - start) == word) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

std::int64_t cgroup_throttled_ns() {
  // The cgroup of the cpu controller: the unified hierarchy (v2, "0::PATH") where it is
  // mounted at the root, else the v1 hierarchy whose line names cpu.
  std::string mount, key, path;
  std::int64_t unit = 1;
  std::ifstream self("/proc/self/cgroup");
  const bool v2 = std::ifstream("/sys/fs/cgroup/cgroup.controllers").good();
  for (std::string line; std::getline(self, line);) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    if (v2 ? line.compare(0, b + 1, "0::") == 0 : has_word(std::string_view(line).substr(a + 1, b - a - 1), "cpu")) {
      path = line.substr(b + 1);
      break;
    }
  }
  if (v2) {
    mount = "/sys/fs/cgroup", key = "throttled_usec", unit = 1000;
  } else {
    std::ifstream mounts("/proc/mounts");
    for (std::string device, dir, type, options, rest;
         mounts >> device >> dir >> type >> options && std::getline(mounts, rest);)
      if (type == "cgroup" && has_word(options, "cpu")) mount = dir;
    key = "throttled_time";  // ns
  }
  if (mount.empty() || path.empty()) return 0;
  std::int64_t total = 0;
  for (;;) {
    total += stat_value(mount + (path == "/" ? "" : path) + "/cpu.stat", key) * unit;
    if (path == "/" || path.empty()) break;
    path = path.substr(0, std::max<std::size_t>(1, path.rfind('/')));
  }
  return total;
}

std::optional<CgroupCpu> read_cgroup_cpu(const std::string& dir) {
  std::ifstream stat(dir + "/cpu.stat");
  if (!stat) return std::nullopt;
  CgroupCpu cpu;
  std::int64_t throttled_usec = -1, throttled_time = -1;
  for (std::string name; stat >> name;) {
    std::int64_t value = 0;
    if (!(stat >> value)) break;
    if (name == "nr_periods") cpu.periods = static_cast<std::uint64_t>(value);
    if (name == "nr_throttled") cpu.throttled_periods = static_cast<std::uint64_t>(value);
    if (name == "throttled_usec") throttled_usec = value;
    if (name == "throttled_time") throttled_time = value;
  }
  cpu.throttled_ns = throttled_usec >= 0 ? throttled_usec * 1000 : std::max<std::int64_t>(0, throttled_time);
  std::string quota;
  if (std::ifstream max(dir + "/cpu.max"); max >> quota >> cpu.period_us) {  // v2: "max 100000" or "30000 100000"
    if (quota != "max" && cpu.period_us > 0) cpu.quota_cores = std::stod(quota) / static_cast<double>(cpu.period_us);
    return cpu;
  }
  std::int64_t quota_us = 0;
  std::ifstream v1_quota(dir + "/cpu.cfs_quota_us"), v1_period(dir + "/cpu.cfs_period_us");
  if (!(v1_quota >> quota_us) || !(v1_period >> cpu.period_us)) return std::nullopt;
  if (quota_us > 0 && cpu.period_us > 0)
    cpu.quota_cores = static_cast<double>(quota_us) / static_cast<double>(cpu.period_us);
  return cpu;
}

CgroupThrottling cgroup_throttling(const CgroupCpu& before, const CgroupCpu& after) {
  auto minus = [](auto a, auto b) { return a > b ? a - b : decltype(a){0}; };  // counters only grow
  return {minus(after.periods, before.periods), minus(after.throttled_periods, before.throttled_periods),
          static_cast<double>(minus(after.throttled_ns, before.throttled_ns)) / 1e9, after.quota_cores,
          after.period_us};
}

std::vector<CoreTicks> read_core_ticks() {
  std::vector<CoreTicks> cores;
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    // "cpuN user nice system idle iowait irq softirq steal guest guest_nice"; "cpu " is the sum.
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || line[3] < '0' || line[3] > '9') continue;
    std::istringstream fields(line.substr(3));
    CoreTicks core;
    std::uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    if (!(fields >> core.cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq)) continue;
    fields >> steal;  // absent on very old kernels
    core.idle = idle + iowait;
    core.steal = steal;
    cores.push_back(core);
  }
  return cores;
}

std::vector<CoreBusy> core_busy(const std::vector<CoreTicks>& before, const std::vector<CoreTicks>& after,
                                double window_s) {
  std::vector<CoreBusy> result;
  const double ticks = window_s * static_cast<double>(sysconf(_SC_CLK_TCK));
  if (ticks <= 0) return result;
  for (const CoreTicks& b : after) {
    const auto a = std::find_if(before.begin(), before.end(), [&](const CoreTicks& t) { return t.cpu == b.cpu; });
    if (a == before.end() || b.idle < a->idle || b.steal < a->steal) continue;  // came online during the window
    // Each reading is whole ticks, so a fraction may stray past [0, 1] by a tick or two.
    const double idle = static_cast<double>(b.idle - a->idle) / ticks,
                 steal = static_cast<double>(b.steal - a->steal) / ticks;
    result.push_back({b.cpu, std::clamp(1 - idle - steal, 0.0, 1.0), std::clamp(steal, 0.0, 1.0)});
  }
  return result;
}

CpuTimes self_cpu() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return {seconds(usage.ru_utime), seconds(usage.ru_stime)};
}

}  // namespace loadgen
