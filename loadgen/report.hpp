// The JSON document and the human summary. Every key of docs/loadgen.md, "The JSON
// report", is created null by make_report_skeleton(); a scenario fills what it measured.
#pragma once

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "metrics.hpp"
#include "options.hpp"
#include "server_host.hpp"

namespace loadgen {

boost::json::object make_report_skeleton(const Options& options);

// cpu, cores, kernel, compiler and flags, Boost, git commit, limits, CPU affinity.
boost::json::object machine_info(pid_t server_pid);

// {p50, p90, p99, p999, max, count} in microseconds; null when nothing was recorded.
boost::json::value latency_json(const LatencyRecorder& recorder);
// The whole histogram, for an exact merge: {"unit": "ns", "sub_bucket_bits", "count",
// "max", "buckets": [[index, count], ...]} with only the non-empty buckets.
boost::json::value histogram_json(const LatencyRecorder& recorder);
// Reads histogram_json() back (null: an empty recorder); throws std::runtime_error on a
// histogram of another layout or one whose counts do not add up.
LatencyRecorder histogram_from_json(const boost::json::value& histogram);
// broadcast_completion_us: {p50, p95, p99, max, count, incomplete_messages} in microseconds;
// null when no message completed.
boost::json::value completion_json(const BroadcastCompletion& completion);
// [{cpu, busy, steal}] fractions of a window, one per online core (/proc/stat).
boost::json::array cores_json(const std::vector<CoreBusy>& cores);
// cpu.server_cgroup: {periods, throttled_periods, throttled_s, quota_cores, period_us}.
boost::json::object throttling_json(const CgroupThrottling& throttling);
boost::json::object memory_sample_json(const MemorySample& sample);
// memory.per_connection from the steps: least-squares slopes in bytes per connection.
boost::json::object per_connection_json(const std::vector<MemorySample>& steps);
// memory.client_end: the client's end per connection, by slab cache; null when not measured.
boost::json::value client_end_json(const std::optional<ClientEnd>& client_end);
// memory.server_host: the server host's cost per connection as named parts, the whole of
// the same scope they are checked against, and the flags of a point that does not add up
// (docs/methodology.md, "Memory per connection").
boost::json::object server_host_json(const ServerHost& host);

template <class T>
boost::json::value optional_json(const std::optional<T>& value) {
  return value ? boost::json::value(*value) : boost::json::value(nullptr);
}

void write_json_file(const std::string& path, const boost::json::object& report);
std::string human_summary(const boost::json::object& report);

// One line, redrawn in place, only on a terminal and unless --quiet.
class Progress {
 public:
  explicit Progress(bool quiet);
  void show(const std::string& text);
  void finish();

 private:
  bool enabled_;
  bool shown_ = false;
  Clock::time_point last_{};
};

}  // namespace loadgen
