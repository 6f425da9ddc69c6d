#include "merge.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "metrics.hpp"
#include "report.hpp"

namespace loadgen {

namespace json = boost::json;

namespace {

const json::value& at(const json::object& object, std::initializer_list<const char*> path) {
  const json::value* v = &object.at(*path.begin());
  for (auto it = path.begin() + 1; it != path.end(); ++it) v = &v->as_object().at(*it);
  return *v;
}

std::uint64_t count_of(const json::value& v) { return v.is_null() ? 0 : v.to_number<std::uint64_t>(); }

// The options every slice of one run must share: anything that changes what a line is,
// who is in which room, or when and how often it is sent.
constexpr const char* shared_options[] = {"room_size", "rate", "duration_s", "warmup_s", "size", "tick_us", "start_at_ms", "find_ceiling"};

struct Slice {
  const SliceReport* source;
  std::uint32_t first, end;  // global client ids [first, end)
};

void check_mergeable(const std::vector<SliceReport>& slices, std::vector<Slice>& ranges, std::uint32_t& total) {
  if (slices.empty()) throw MergeRefused("no reports to merge");
  const json::object& first = slices.front().report;
  const auto version = [](const json::object& r) {
    return json::serialize(at(r, {"machine", "git_commit"})) + (at(r, {"machine", "git_dirty"}).as_bool() ? " (dirty)" : "");
  };
  for (const SliceReport& slice : slices) {
    const json::object& r = slice.report;
    if (!r.contains("mode") || r.at("mode") != "chat")
      throw MergeRefused(slice.name + ": only chat reports can be merged (mode " + (r.contains("mode") ? json::serialize(r.at("mode")) : "missing") + ")");
    if (!r.contains("loss_detail") || !r.contains("latency_histogram") || !r.contains("slice"))
      throw MergeRefused(slice.name + ": written by a loadgen without latency_histogram, loss_detail or slice; rerun it with this loadgen");
    if (version(r) != version(first))
      throw MergeRefused("different loadgen versions: " + slices.front().name + " is " + version(first) + ", " + slice.name + " is " + version(r));
    for (const char* key : shared_options)
      if (at(r, {"options"}).as_object().if_contains(key) == nullptr || at(r, {"options", key}) != at(first, {"options", key}))
        throw MergeRefused("option " + std::string(key) + " differs: " + slices.front().name + " has " +
                           json::serialize(at(first, {"options"}).as_object().contains(key) ? at(first, {"options", key}) : json::value()) + ", " +
                           slice.name + " has " + json::serialize(at(r, {"options"}).as_object().contains(key) ? at(r, {"options", key}) : json::value()));
    if (at(r, {"options", "find_ceiling"}).as_bool()) throw MergeRefused(slice.name + ": a --find-ceiling search is adaptive; its slices cannot be merged");
    const auto slice_total = at(r, {"slice", "clients_total"}).to_number<std::uint32_t>();
    if (slice_total != at(first, {"slice", "clients_total"}).to_number<std::uint32_t>())
      throw MergeRefused("clients_total differs: " + slices.front().name + " and " + slice.name);
    const auto offset = at(r, {"slice", "client_offset"}).to_number<std::uint32_t>();
    ranges.push_back({&slice, offset, offset + at(r, {"slice", "clients"}).to_number<std::uint32_t>()});
  }
  total = at(first, {"slice", "clients_total"}).to_number<std::uint32_t>();
  std::sort(ranges.begin(), ranges.end(), [](const Slice& a, const Slice& b) { return a.first < b.first; });
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].end)
      throw MergeRefused("overlapping client slices: " + ranges[i - 1].source->name + " runs clients " + std::to_string(ranges[i - 1].first) + "-" +
                         std::to_string(ranges[i - 1].end - 1) + ", " + ranges[i].source->name + " runs " + std::to_string(ranges[i].first) + "-" +
                         std::to_string(ranges[i].end - 1));
}

// Clients of [0, total) that no slice covers, as [first, last] ranges.
json::array missing_clients(const std::vector<Slice>& ranges, std::uint32_t total) {
  json::array missing;
  std::uint32_t next = 0;
  for (const Slice& s : ranges) {
    if (s.first > next) missing.push_back(json::array{next, s.first - 1});
    next = std::max(next, s.end);
  }
  if (next < total) missing.push_back(json::array{next, total - 1});
  return missing;
}

json::value ns_to_ms(const json::value* ns) { return ns == nullptr || ns->is_null() ? json::value(nullptr) : json::value(ns->to_number<double>() / 1e6); }

json::value rounded_sum(const std::vector<const json::value*>& values) {
  double sum = 0;
  for (const json::value* v : values) {
    if (v == nullptr || v->is_null()) return nullptr;
    sum += v->to_number<double>();
  }
  return std::round(sum * 1000) / 1000;
}

}  // namespace

json::object merge_reports(const std::vector<SliceReport>& slices) {
  std::vector<Slice> ranges;
  std::uint32_t total = 0;
  check_mergeable(slices, ranges, total);
  const json::object& first = slices.front().report;
  const auto room_size = at(first, {"options", "room_size"}).to_number<std::uint32_t>();

  json::object merged;
  merged["mode"] = "chat";
  merged["merged_from"] = slices.size();
  const json::array missing = missing_clients(ranges, total);
  merged["missing_clients"] = missing;
  std::uint64_t requested = 0, connected = 0;
  json::array limits, warnings, hosts;
  LatencyRecorder latency;
  std::vector<std::int64_t> bounds_ns;  // of the hosts whose offset was measured
  std::uint64_t cross_samples = 0;
  double cross_min_us = INFINITY;
  for (const Slice& range : ranges) {
    const json::object& r = range.source->report;
    requested += count_of(r.at("clients_requested"));
    connected += count_of(r.at("clients_connected"));
    latency.merge(histogram_from_json(r.at("latency_histogram")));
    if (!r.at("limit_hit").is_null()) limits.push_back(json::value(range.source->name + ": " + std::string(r.at("limit_hit").as_string())));
    for (const json::value& w : r.at("warnings").as_array()) warnings.push_back(json::value(range.source->name + ": " + std::string(w.as_string())));
    const json::object& cpu = r.at("cpu").as_object();
    const json::object& clock = r.at("clock").as_object();
    hosts.push_back(json::object{{"report", range.source->name},
                                 {"hostname", r.at("machine").as_object().contains("hostname") ? at(r, {"machine", "hostname"}) : json::value(nullptr)},
                                 {"clients", json::array{range.first, range.end - 1}},
                                 {"clients_connected", r.at("clients_connected")},
                                 {"limit_hit", r.at("limit_hit")},
                                 {"loadgen_cpu_fraction", cpu.at("loadgen_cpu_fraction")},
                                 {"loadgen_saturated", cpu.at("loadgen_saturated")},
                                 {"ready_at_unix_ms", r.contains("ready_at_unix_ms") ? r.at("ready_at_unix_ms") : json::value(nullptr)},
                                 // This host's UNIX clock less the reference clock, as the launcher measured it.
                                 {"clock_offset_ms", ns_to_ms(clock.if_contains("measured_offset_ns"))},
                                 {"clock_offset_bound_ms", ns_to_ms(clock.if_contains("measured_offset_bound_ns"))},
                                 {"clock_offset_ms_injected", at(r, {"options", "clock_offset_ms"})}});
    if (const json::value* bound = clock.if_contains("measured_offset_bound_ns"); bound && !bound->is_null())
      bounds_ns.push_back(bound->to_number<std::int64_t>());
    cross_samples += count_of(clock.contains("cross_slice_samples") ? clock.at("cross_slice_samples") : json::value(nullptr));
    if (const json::value* m = clock.if_contains("cross_slice_min_latency_us"); m && !m->is_null())
      cross_min_us = std::min(cross_min_us, m->to_number<double>());
  }
  merged["clients_requested"] = requested;
  merged["clients_connected"] = connected;
  merged["slice"] = json::object{{"clients_total", total}};
  // Any host's limit is the run's: the figure is what the run reached, not what was asked.
  std::string limit_text;
  for (const json::value& l : limits) limit_text += (limit_text.empty() ? "" : "; ") + std::string(l.as_string());
  merged["limit_hit"] = limits.empty() ? json::value(nullptr) : json::value(limit_text);
  merged["hosts"] = hosts;
  merged["options"] = at(first, {"options"});
  merged["latency_us"] = latency_json(latency);
  merged["latency_histogram"] = histogram_json(latency);

  // Loss over every slice: what each sender sent, from the report that ran it; each
  // receiver's tracks, from its own.
  std::map<std::uint32_t, std::uint64_t> sent_by;
  for (const Slice& range : ranges) {
    const json::object& senders = at(range.source->report, {"loss_detail", "senders"}).as_object();
    const json::array& ids = senders.at("id").as_array();
    const json::array& sent = senders.at("sent").as_array();
    for (std::size_t i = 0; i < ids.size(); ++i) sent_by[ids[i].to_number<std::uint32_t>()] = sent.at(i).to_number<std::uint64_t>();
  }
  ChatLossCounter counter(sent_by, room_size);
  std::uint64_t unknown = 0, cross_slice = 0;
  for (const Slice& range : ranges) {
    const json::object& r = range.source->report;
    unknown += count_of(at(r, {"lines", "unknown"}));
    cross_slice += count_of(at(r, {"clock", "cross_slice_deliveries_untimed"}));
    for (const json::value& v : at(r, {"loss_detail", "receivers"}).as_array()) {
      const json::object& receiver = v.as_object();
      const json::array& next = receiver.at("next").as_array();
      const json::array& gaps = receiver.at("gaps").as_array();
      std::vector<SenderTrack> tracks(next.size());
      for (std::size_t i = 0; i < next.size(); ++i) {
        tracks[i].next_expected = next[i].to_number<std::uint64_t>();
        tracks[i].received = tracks[i].next_expected - std::min(tracks[i].next_expected, gaps.at(i).to_number<std::uint64_t>());
      }
      // The receiver's repeats and late lines come on top of its unique lines.
      if (!tracks.empty()) {
        tracks[0].duplicated = receiver.at("duplicated").to_number<std::uint64_t>();
        tracks[0].reordered = receiver.at("reordered").to_number<std::uint64_t>();
        tracks[0].received += tracks[0].duplicated;
      }
      counter.add_receiver(receiver.at("id").to_number<std::uint32_t>(), receiver.at("open").as_bool(),
                           receiver.at("room_first").to_number<std::uint32_t>(), tracks);
    }
  }
  const bool complete = missing.empty();
  auto if_complete = [&](std::uint64_t value) { return complete ? json::value(value) : json::value(nullptr); };
  if (!complete) warnings.push_back(json::value("clients " + json::serialize(missing) + " are in no report: expected, lost and outstanding are unknown"));
  merged["lines"] = json::object{{"sent", counter.sent}, {"delivered", counter.loss.received}, {"expected", if_complete(counter.expected)},
                                 {"lost", if_complete(counter.loss.lost)}, {"outstanding", if_complete(counter.loss.outstanding)},
                                 {"duplicated", counter.loss.duplicated}, {"reordered", counter.loss.reordered},
                                 {"receivers", counter.receivers}, {"receivers_with_loss", if_complete(counter.loss.receivers_with_loss)},
                                 {"receivers_with_outstanding", if_complete(counter.loss.receivers_with_outstanding)},
                                 {"receivers_disconnected", counter.receivers_disconnected}, {"unknown", unknown},
                                 {"server_lines_out", nullptr}};
  // A cross-slice sample is off by at most its sender's and its receiver's bounds: at most
  // the two largest of the run.
  std::sort(bounds_ns.rbegin(), bounds_ns.rend());
  const json::value cross_bound_us =
      cross_samples == 0 || bounds_ns.size() < 2 ? json::value(nullptr) : json::value(static_cast<double>(bounds_ns[0] + bounds_ns[1]) / 1e3);
  merged["clock"] = json::object{
      {"timed", cross_samples > 0 ? "same-process pairs exactly; cross-slice pairs whose two hosts' offsets were measured, within cross_slice_error_bound_us"
                                  : "same-process pairs only"},
      {"samples_used", latency.count()},
      {"same_process_samples", latency.count() - cross_samples},
      {"cross_slice_samples", cross_samples},
      {"cross_slice_error_bound_us", cross_bound_us},
      {"cross_slice_min_latency_us", cross_samples > 0 ? json::value(cross_min_us) : json::value(nullptr)},
      {"cross_slice_deliveries_untimed", cross_slice}};

  // Rate steps, index by index: the slices ran the same steps at the same start times.
  json::array steps;
  const std::size_t step_count = at(first, {"rate_steps"}).as_array().size();
  for (std::size_t i = 0; i < step_count; ++i) {
    LatencyRecorder step_latency;
    std::vector<const json::value*> sent_per_s, deliveries_per_s;
    std::uint64_t late = 0, late_stalled = 0, step_cross = 0;
    json::array late_hosts;
    for (const Slice& range : ranges) {
      const json::array& own = at(range.source->report, {"rate_steps"}).as_array();
      if (i >= own.size()) {
        late_hosts.push_back(json::value(range.source->name + ": did not run this step"));
        continue;
      }
      const json::object& step = own[i].as_object();
      step_latency.merge(histogram_from_json(step.at("latency_histogram")));
      sent_per_s.push_back(&at(step, {"throughput", "sent_per_s"}));
      deliveries_per_s.push_back(&at(step, {"throughput", "deliveries_per_s"}));
      late += count_of(step.at("late_sends"));
      late_stalled += count_of(step.at("late_sends_stalled"));
      step_cross += count_of(step.at("cross_slice_samples"));
      // Ready after the step's start: its first sends were late, and the step began unevenly.
      if (const json::value& l = step.at("start_late_ms"); !l.is_null() && l.to_number<double>() > 1.0)
        late_hosts.push_back(json::value(range.source->name + ": " + json::serialize(l) + " ms late"));
    }
    steps.push_back(json::object{{"rate", at(first, {"rate_steps"}).as_array()[i].as_object().at("rate")},
                                 {"latency_us", latency_json(step_latency)},
                                 {"latency_histogram", histogram_json(step_latency)},
                                 {"throughput", json::object{{"sent_per_s", rounded_sum(sent_per_s)}, {"deliveries_per_s", rounded_sum(deliveries_per_s)}}},
                                 {"late_sends", late},
                                 {"late_sends_stalled", late_stalled},
                                 {"cross_slice_samples", step_cross},
                                 {"late_hosts", late_hosts}});
    if (!late_hosts.empty()) warnings.push_back(json::value("rate step " + std::to_string(i) + ": " + json::serialize(late_hosts)));
  }
  merged["rate_steps"] = steps;
  merged["throughput"] = steps.empty() ? json::value(nullptr) : steps.back().as_object().at("throughput");
  merged["warnings"] = warnings;
  // Measured per host (hosts[]) or on the server's host, not by a merge.
  merged["cpu"] = nullptr;
  merged["memory"] = json::object{{"per_connection", json::object{{"rss_bytes", nullptr}, {"system_bytes", nullptr}}}, {"server_host", nullptr}};
  merged["ramp"] = nullptr;
  merged["ceiling"] = nullptr;
  merged["broadcast_completion_us"] = nullptr;
  return merged;
}

}  // namespace loadgen
