#include "merge.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <sstream>

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

// The options every slice of one run must share, by mode: anything that changes what a
// line is, who is in which room, when and how often it is sent, or when a phase starts.
const std::vector<const char*>& shared_options(std::string_view mode) {
  static const std::vector<const char*> chat{"room_size", "rate",        "duration_s",   "warmup_s", "size",
                                             "tick_us",   "start_at_ms", "find_ceiling", "protocol"},
      broadcast{"messages", "interval_ms", "size", "drain_s", "start_at_ms", "protocol"},
      idle{"steps", "hold_s", "connect_timeout_s", "start_at_ms", "protocol"};
  return mode == "chat" ? chat : mode == "broadcast" ? broadcast : idle;
}

// What a report of each mode must carry to be merged (besides "slice").
const std::vector<const char*>& merge_keys(std::string_view mode) {
  static const std::vector<const char*> chat{"latency_histogram", "loss_detail", "rate_steps", "clock"},
      broadcast{"latency_histogram", "loss_detail", "broadcast_detail", "phases", "clock"}, idle{"idle_steps"};
  return mode == "chat" ? chat : mode == "broadcast" ? broadcast : idle;
}

struct Slice {
  const SliceReport* source;
  std::uint32_t first, end;  // global client ids [first, end)
};

void check_mergeable(const std::vector<SliceReport>& slices, std::vector<Slice>& ranges, std::uint32_t& total) {
  if (slices.empty()) throw MergeRefused("no reports to merge");
  const json::object& first = slices.front().report;
  const auto version = [](const json::object& r) {
    return json::serialize(at(r, {"machine", "git_commit"})) +
           (at(r, {"machine", "git_dirty"}).as_bool() ? " (dirty)" : "");
  };
  const auto mode_of = [](const json::object& r) {
    return r.contains("mode") ? json::serialize(r.at("mode")) : std::string("missing");
  };
  const std::string mode = mode_of(first);
  if (mode != "\"chat\"" && mode != "\"broadcast\"" && mode != "\"idle\"")
    throw MergeRefused(slices.front().name + ": not a loadgen chat, broadcast or idle report (mode " + mode + ")");
  for (const SliceReport& slice : slices) {
    const json::object& r = slice.report;
    if (mode_of(r) != mode)
      throw MergeRefused("different modes: " + slices.front().name + " is a " + mode + " report, " + slice.name +
                         " is " + mode_of(r) + "; only the slices of one run can be merged");
    for (const char* key : merge_keys(first.at("mode").as_string()))
      if (!r.contains(key) || !r.contains("slice"))
        throw MergeRefused(slice.name + ": written by a loadgen without " + key +
                           " or slice; rerun it with this loadgen");
    if (version(r) != version(first))
      throw MergeRefused("different loadgen versions: " + slices.front().name + " is " + version(first) + ", " +
                         slice.name + " is " + version(r));
    for (const char* key : shared_options(first.at("mode").as_string()))
      if (at(r, {"options"}).as_object().if_contains(key) == nullptr ||
          at(r, {"options", key}) != at(first, {"options", key}))
        throw MergeRefused(
            "option " + std::string(key) + " differs: " + slices.front().name + " has " +
            json::serialize(at(first, {"options"}).as_object().contains(key) ? at(first, {"options", key})
                                                                             : json::value()) +
            ", " + slice.name + " has " +
            json::serialize(at(r, {"options"}).as_object().contains(key) ? at(r, {"options", key}) : json::value()));
    if (mode == "\"chat\"" && at(r, {"options", "find_ceiling"}).as_bool())
      throw MergeRefused(slice.name + ": a --find-ceiling search is adaptive; its slices cannot be merged");
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
      throw MergeRefused("overlapping client slices: " + ranges[i - 1].source->name + " runs clients " +
                         std::to_string(ranges[i - 1].first) + "-" + std::to_string(ranges[i - 1].end - 1) + ", " +
                         ranges[i].source->name + " runs " + std::to_string(ranges[i].first) + "-" +
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

json::value ns_to_ms(const json::value* ns) {
  return ns == nullptr || ns->is_null() ? json::value(nullptr) : json::value(ns->to_number<double>() / 1e6);
}

json::value rounded_sum(const std::vector<const json::value*>& values) {
  double sum = 0;
  for (const json::value* v : values) {
    if (v == nullptr || v->is_null()) return nullptr;
    sum += v->to_number<double>();
  }
  return std::round(sum * 1000) / 1000;
}

}  // namespace

namespace {

// The clock figures of the slices: the hosts' bounds and the samples between slices.
struct ClockTotals {
  std::vector<std::int64_t> bounds_ns;  // of the hosts whose offset was measured
  std::uint64_t cross_samples = 0, untimed = 0;
  double cross_min_us = INFINITY;

  void add(const json::object& clock) {
    if (const json::value* bound = clock.if_contains("measured_offset_bound_ns"); bound && !bound->is_null())
      bounds_ns.push_back(bound->to_number<std::int64_t>());
    cross_samples +=
        count_of(clock.contains("cross_slice_samples") ? clock.at("cross_slice_samples") : json::value(nullptr));
    untimed += count_of(clock.contains("cross_slice_deliveries_untimed") ? clock.at("cross_slice_deliveries_untimed")
                                                                         : json::value(nullptr));
    if (const json::value* m = clock.if_contains("cross_slice_min_latency_us"); m && !m->is_null())
      cross_min_us = std::min(cross_min_us, m->to_number<double>());
  }
  // A sample between hosts is off by at most its sender's and its receiver's bounds: at
  // most the two largest of the run. Null with fewer than two measured hosts.
  json::value error_bound_us() const {
    std::vector<std::int64_t> sorted = bounds_ns;
    std::sort(sorted.rbegin(), sorted.rend());
    return sorted.size() < 2 ? json::value(nullptr) : json::value(static_cast<double>(sorted[0] + sorted[1]) / 1e3);
  }
  json::object to_json(std::uint64_t samples_used) const {
    return json::object{
        {"timed", cross_samples > 0 ? "same-process pairs exactly; cross-slice pairs whose two hosts' offsets were "
                                      "measured, within cross_slice_error_bound_us"
                                    : "same-process pairs only"},
        {"samples_used", samples_used},
        {"same_process_samples", samples_used - cross_samples},
        {"cross_slice_samples", cross_samples},
        {"cross_slice_error_bound_us", cross_samples == 0 ? json::value(nullptr) : error_bound_us()},
        {"cross_slice_min_latency_us", cross_samples > 0 ? json::value(cross_min_us) : json::value(nullptr)},
        {"cross_slice_deliveries_untimed", untimed}};
  }
};

// One receiver's tracks back from its loss_detail entry: per sender, the next sequence
// number and the gaps below it; its repeats and late lines come on top of its unique lines.
std::vector<SenderTrack> tracks_of(const json::object& receiver) {
  const json::array& next = receiver.at("next").as_array();
  const json::array& gaps = receiver.at("gaps").as_array();
  std::vector<SenderTrack> tracks(next.size());
  for (std::size_t i = 0; i < next.size(); ++i) {
    tracks[i].next_expected = next[i].to_number<std::uint64_t>();
    tracks[i].received =
        tracks[i].next_expected - std::min(tracks[i].next_expected, gaps.at(i).to_number<std::uint64_t>());
  }
  if (!tracks.empty()) {
    tracks[0].duplicated = receiver.at("duplicated").to_number<std::uint64_t>();
    tracks[0].reordered = receiver.at("reordered").to_number<std::uint64_t>();
    tracks[0].received += tracks[0].duplicated;
  }
  return tracks;
}

// Chat loss over every slice: what each sender sent, from the report that ran it; each
// receiver's tracks, from its own.
ChatLossCounter merge_chat_loss(const std::vector<Slice>& ranges) {
  const json::object& first = ranges.front().source->report;
  const auto room_size = at(first, {"options", "room_size"}).to_number<std::uint32_t>();
  std::map<std::uint32_t, std::uint64_t> sent_by;
  for (const Slice& range : ranges) {
    const json::object& senders = at(range.source->report, {"loss_detail", "senders"}).as_object();
    const json::array& ids = senders.at("id").as_array();
    const json::array& sent = senders.at("sent").as_array();
    for (std::size_t i = 0; i < ids.size(); ++i)
      sent_by[ids[i].to_number<std::uint32_t>()] = sent.at(i).to_number<std::uint64_t>();
  }
  ChatLossCounter counter(sent_by, room_size);
  for (const Slice& range : ranges)
    for (const json::value& v : at(range.source->report, {"loss_detail", "receivers"}).as_array()) {
      const json::object& receiver = v.as_object();
      counter.add_receiver(receiver.at("id").to_number<std::uint32_t>(), receiver.at("open").as_bool(),
                           receiver.at("room_first").to_number<std::uint32_t>(), tracks_of(receiver));
    }
  return counter;
}

// Rate step i over every slice: the slices ran the same steps at the same start times.
json::object merge_rate_step(const std::vector<Slice>& ranges, std::size_t i, json::array& warnings) {
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
  if (!late_hosts.empty())
    warnings.push_back(json::value("rate step " + std::to_string(i) + ": " + json::serialize(late_hosts)));
  return {{"rate", at(ranges.front().source->report, {"rate_steps"}).as_array()[i].as_object().at("rate")},
          {"latency_us", latency_json(step_latency)},
          {"latency_histogram", histogram_json(step_latency)},
          {"throughput",
           json::object{{"sent_per_s", rounded_sum(sent_per_s)}, {"deliveries_per_s", rounded_sum(deliveries_per_s)}}},
          {"late_sends", late},
          {"late_sends_stalled", late_stalled},
          {"cross_slice_samples", step_cross},
          {"late_hosts", std::move(late_hosts)}};
}

// Chat: loss over every slice, and the rate steps, index by index.
void merge_chat(const std::vector<Slice>& ranges, bool complete, json::object& merged, json::array& warnings) {
  const ChatLossCounter counter = merge_chat_loss(ranges);
  std::uint64_t unknown = 0, own_copies = 0;
  for (const Slice& range : ranges) {
    unknown += count_of(at(range.source->report, {"lines", "unknown"}));
    own_copies += count_of(at(range.source->report, {"lines", "own_copies"}));
  }
  auto if_complete = [&](std::uint64_t value) { return complete ? json::value(value) : json::value(nullptr); };
  merged["lines"] = json::object{{"sent", counter.sent},
                                 {"delivered", counter.loss.received},
                                 {"expected", if_complete(counter.expected)},
                                 {"lost", if_complete(counter.loss.lost)},
                                 {"outstanding", if_complete(counter.loss.outstanding)},
                                 {"duplicated", counter.loss.duplicated},
                                 {"reordered", counter.loss.reordered},
                                 {"receivers", counter.receivers},
                                 {"receivers_with_loss", if_complete(counter.loss.receivers_with_loss)},
                                 {"receivers_with_outstanding", if_complete(counter.loss.receivers_with_outstanding)},
                                 {"receivers_disconnected", counter.receivers_disconnected},
                                 {"unknown", unknown},
                                 {"server_lines_out", nullptr},
                                 {"own_copies", own_copies}};
  json::array steps;
  const std::size_t step_count = at(ranges.front().source->report, {"rate_steps"}).as_array().size();
  for (std::size_t i = 0; i < step_count; ++i) steps.push_back(merge_rate_step(ranges, i, warnings));
  merged["rate_steps"] = steps;
  merged["throughput"] = steps.empty() ? json::value(nullptr) : steps.back().as_object().at("throughput");
}

// The phases the slices started at launcher-given times (broadcast: sync, broadcast; idle:
// its steps), index by index, each with the hosts that were late for it (> 1 ms).
json::array merge_phases(const std::vector<Slice>& ranges, const char* key, json::array& warnings) {
  auto ms = [](const json::value& v) {
    std::ostringstream text;
    text << v.to_number<double>();
    return text.str();
  };
  json::array phases;
  const std::size_t count = at(ranges.front().source->report, {key}).as_array().size();
  for (std::size_t i = 0; i < count; ++i) {
    json::object phase = at(ranges.front().source->report, {key}).as_array()[i].as_object();
    json::array late_hosts;
    for (const Slice& range : ranges) {
      const json::array& own = at(range.source->report, {key}).as_array();
      const json::value* late = i < own.size() ? own[i].as_object().if_contains("start_late_ms") : nullptr;
      // Idle steps: connected after the step's ramp deadline, so perhaps after its sample.
      const json::value* ready_late = i < own.size() ? own[i].as_object().if_contains("ready_late_ms") : nullptr;
      if (late == nullptr || late->is_null())
        late_hosts.push_back(json::value(range.source->name + ": did not reach this phase"));
      else if (late->to_number<double>() > 1.0)
        late_hosts.push_back(json::value(range.source->name + ": " + ms(*late) + " ms late"));
      else if (ready_late && !ready_late->is_null() && ready_late->to_number<double>() > 1.0)
        late_hosts.push_back(
            json::value(range.source->name + ": connected " + ms(*ready_late) + " ms after the ramp's deadline"));
    }
    phase.erase("start_late_ms");
    phase.erase("ready_late_ms");
    if (!late_hosts.empty())
      warnings.push_back(json::value(std::string(key) + " " +
                                     json::serialize(phase.contains("phase") ? phase.at("phase") : json::value(i)) +
                                     ": " + json::serialize(late_hosts)));
    phase["late_hosts"] = std::move(late_hosts);
    phases.push_back(std::move(phase));
  }
  return phases;
}

// Broadcast completion per message: every receiver of every slice had it, and every slice
// timed its receivers (none left a line from another host untimed). Null unless what was
// sent is known and the slices timed every delivery.
json::value merge_completion(const std::vector<Slice>& ranges, std::uint64_t sends, std::uint64_t receivers, bool known,
                             const ClockTotals& clocks, json::array& warnings) {
  const auto messages = at(ranges.front().source->report, {"options", "messages"}).to_number<std::size_t>();
  std::vector<std::uint64_t> had(messages, 0);
  std::vector<std::int64_t> slowest(messages, INT64_MIN);
  for (const Slice& range : ranges) {
    const json::object& detail = at(range.source->report, {"broadcast_detail"}).as_object();
    const json::array& counts = detail.at("message_receivers").as_array();
    const json::array& max = detail.at("message_max_latency_ns").as_array();
    for (std::size_t m = 0; m < messages && m < counts.size(); ++m) {
      had[m] += counts[m].to_number<std::uint64_t>();
      if (!max.at(m).is_null()) slowest[m] = std::max(slowest[m], max.at(m).to_number<std::int64_t>());
    }
  }
  const BroadcastCompletion completion =
      broadcast_completion(std::min<std::uint64_t>(sends, messages), receivers, had, slowest);
  const bool timed = clocks.untimed == 0;
  if (!timed)
    warnings.push_back(json::value("broadcast completion is not timed: " + std::to_string(clocks.untimed) +
                                   " deliveries crossed hosts whose clocks were not both measured"));
  if (!known || !timed || completion.latency.count() == 0) return nullptr;
  json::value merged = completion_json(completion);
  // The sender's and the slowest receiver's clock bounds, at most the two largest.
  merged.as_object()["error_bound_us"] = clocks.cross_samples > 0 ? clocks.error_bound_us() : json::value(0.0);
  return merged;
}

// Broadcast's receivers over every slice, each against the sends of the one sender.
struct BroadcastReceivers {
  LossTotals loss;
  std::uint64_t receivers = 0, disconnected = 0;
};
BroadcastReceivers merge_broadcast_receivers(const std::vector<Slice>& ranges, std::uint64_t sends) {
  BroadcastReceivers all;
  for (const Slice& range : ranges)
    for (const json::value& v : at(range.source->report, {"loss_detail", "receivers"}).as_array()) {
      const json::object& receiver = v.as_object();
      SenderTrack track;
      track.next_expected = receiver.at("next").as_array().at(0).to_number<std::uint64_t>();
      track.received = track.next_expected -
                       std::min(track.next_expected, receiver.at("gaps").as_array().at(0).to_number<std::uint64_t>());
      const bool open = receiver.at("open").as_bool();
      ++all.receivers;
      if (!open) ++all.disconnected;
      all.loss.received += track.received;
      all.loss.duplicated += receiver.at("duplicated").to_number<std::uint64_t>();
      all.loss.reordered += receiver.at("reordered").to_number<std::uint64_t>();
      all.loss.add_receiver(track.missing(sends, open));
    }
  return all;
}

// Broadcast: one sender (global client 0, in the slice at offset 0); every other client a
// receiver. Expected = sent x receivers over every slice; each message's completion is
// the largest of the slices' slowest receivers, timed only if every slice could time it.
void merge_broadcast(const std::vector<Slice>& ranges, bool complete, const ClockTotals& clocks, json::object& merged,
                     json::array& warnings) {
  std::optional<std::uint64_t> sent;
  std::uint64_t sync_sent = 0, sync_received = 0, unknown = 0, late = 0, late_stalled = 0, own_copies = 0;
  for (const Slice& range : ranges) {
    const json::object& r = range.source->report;
    const json::object& senders = at(r, {"loss_detail", "senders"}).as_object();
    if (!senders.at("sent").as_array().empty()) sent = senders.at("sent").as_array()[0].to_number<std::uint64_t>();
    sync_sent += count_of(at(r, {"lines", "sync_sent"}));
    sync_received += count_of(at(r, {"lines", "sync_received"}));
    unknown += count_of(at(r, {"lines", "unknown"}));
    late += count_of(at(r, {"lines", "late_sends"}));
    late_stalled += count_of(at(r, {"lines", "late_sends_stalled"}));
    own_copies += count_of(at(r, {"lines", "own_copies"}));
  }
  // The slice at offset 0 ran the sender: without its report nothing is known of what was sent.
  const bool known = complete && sent.has_value();
  const std::uint64_t sends = sent.value_or(0);
  const BroadcastReceivers all = merge_broadcast_receivers(ranges, sends);
  const LossTotals& loss = all.loss;
  const std::uint64_t receivers = all.receivers, disconnected = all.disconnected;
  auto if_known = [&](std::uint64_t value) { return known ? json::value(value) : json::value(nullptr); };
  merged["lines"] = json::object{{"sent", sends},
                                 {"delivered", loss.received},
                                 {"expected", if_known(sends * receivers)},
                                 {"lost", if_known(loss.lost)},
                                 {"outstanding", if_known(loss.outstanding)},
                                 {"duplicated", loss.duplicated},
                                 {"reordered", loss.reordered},
                                 {"receivers", receivers},
                                 {"receivers_with_loss", if_known(loss.receivers_with_loss)},
                                 {"receivers_with_outstanding", if_known(loss.receivers_with_outstanding)},
                                 {"receivers_disconnected", disconnected},
                                 {"unknown", unknown},
                                 {"late_sends", late},
                                 {"late_sends_stalled", late_stalled},
                                 {"sync_sent", sync_sent},
                                 {"sync_received", sync_received},
                                 {"server_lines_out", nullptr},
                                 {"own_copies", own_copies}};

  merged["broadcast_completion_us"] = merge_completion(ranges, sends, receivers, known, clocks, warnings);
  merged["phases"] = merge_phases(ranges, "phases", warnings);
  // The sender slice's sent_per_s, the slices' deliveries_per_s summed, each over its own window.
  std::vector<const json::value*> deliveries_per_s;
  const json::value* sent_per_s = nullptr;
  for (const Slice& range : ranges) {
    deliveries_per_s.push_back(&at(range.source->report, {"throughput", "deliveries_per_s"}));
    if (range.first == 0) sent_per_s = &at(range.source->report, {"throughput", "sent_per_s"});
  }
  merged["throughput"] = json::object{{"sent_per_s", sent_per_s ? *sent_per_s : json::value(nullptr)},
                                      {"deliveries_per_s", rounded_sum(deliveries_per_s)}};
}

// Idle: each step's connections summed over the slices, at the step's sample time. The
// server's memory at those times is the launcher's to add (scripts/run_distributed.sh
// samples it on the server's host): no slice runs there.
void merge_idle(const std::vector<Slice>& ranges, json::array& warnings, json::object& merged) {
  json::array steps = merge_phases(ranges, "idle_steps", warnings);
  json::array memory_steps;
  std::uint64_t closed = 0;
  for (const Slice& range : ranges) closed += count_of(range.source->report.at("closed_by_server"));
  for (std::size_t i = 0; i < steps.size(); ++i) {
    std::uint64_t target = 0, connected = 0;
    for (const Slice& range : ranges) {
      const json::array& own = at(range.source->report, {"idle_steps"}).as_array();
      if (i >= own.size()) continue;
      target += count_of(own[i].as_object().at("target"));
      connected += count_of(own[i].as_object().at("connected"));
    }
    json::object& step = steps[i].as_object();
    step["target"] = target;
    step["connected"] = connected;
    memory_steps.push_back(json::object{
        {"clients", connected}, {"sample_at_unix_ms", step.at("sample_at_unix_ms")}, {"rss_bytes", nullptr}});
  }
  merged["idle_steps"] = steps;
  merged["closed_by_server"] = closed;
  merged["lines"] = nullptr;
  merged["throughput"] = nullptr;
  merged["memory"] = json::object{{"steps", std::move(memory_steps)},
                                  {"per_connection", json::object{{"rss_bytes", nullptr}, {"system_bytes", nullptr}}},
                                  {"server_host", nullptr}};
}

}  // namespace

namespace {

// A report's "clock" block; empty if it has none.
const json::object& clock_of(const json::object& report) {
  static const json::object no_clock{};
  return report.contains("clock") && report.at("clock").is_object() ? report.at("clock").as_object() : no_clock;
}

// The merged report's hosts[] entry of one slice.
json::object host_json(const Slice& range) {
  const json::object& r = range.source->report;
  const json::object& cpu = r.at("cpu").as_object();
  const json::object& clock = clock_of(r);
  return {{"report", range.source->name},
          {"hostname",
           r.at("machine").as_object().contains("hostname") ? at(r, {"machine", "hostname"}) : json::value(nullptr)},
          {"clients", json::array{range.first, range.end - 1}},
          {"clients_connected", r.at("clients_connected")},
          {"limit_hit", r.at("limit_hit")},
          {"loadgen_cpu_fraction", cpu.at("loadgen_cpu_fraction")},
          {"loadgen_saturated", cpu.at("loadgen_saturated")},
          {"ready_at_unix_ms", r.contains("ready_at_unix_ms") ? r.at("ready_at_unix_ms") : json::value(nullptr)},
          // This host's UNIX clock less the reference clock, as the launcher measured it.
          {"clock_offset_ms", ns_to_ms(clock.if_contains("measured_offset_ns"))},
          {"clock_offset_bound_ms", ns_to_ms(clock.if_contains("measured_offset_bound_ns"))},
          {"clock_offset_ms_injected", at(r, {"options", "clock_offset_ms"})}};
}

}  // namespace

json::object merge_reports(const std::vector<SliceReport>& slices) {
  std::vector<Slice> ranges;
  std::uint32_t total = 0;
  check_mergeable(slices, ranges, total);
  const json::object& first = slices.front().report;
  const std::string mode(first.at("mode").as_string());

  json::object merged;
  merged["mode"] = mode;
  merged["merged_from"] = slices.size();
  const json::array missing = missing_clients(ranges, total);
  merged["missing_clients"] = missing;
  std::uint64_t requested = 0, connected = 0;
  json::array limits, warnings, hosts;
  LatencyRecorder latency;
  ClockTotals clocks;
  for (const Slice& range : ranges) {
    const json::object& r = range.source->report;
    requested += count_of(r.at("clients_requested"));
    connected += count_of(r.at("clients_connected"));
    if (mode != "idle") latency.merge(histogram_from_json(r.at("latency_histogram")));
    if (!r.at("limit_hit").is_null())
      limits.push_back(json::value(range.source->name + ": " + std::string(r.at("limit_hit").as_string())));
    for (const json::value& w : r.at("warnings").as_array())
      warnings.push_back(json::value(range.source->name + ": " + std::string(w.as_string())));
    hosts.push_back(host_json(range));
    clocks.add(clock_of(r));
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
  const bool complete = missing.empty();
  if (!complete)
    warnings.push_back(json::value(
        "clients " + json::serialize(missing) + " are in no report: " +
        (mode == "idle" ? "the steps' connection totals lack them" : "expected, lost and outstanding are unknown")));
  merged["latency_us"] = mode == "idle" ? json::value(nullptr) : latency_json(latency);
  merged["latency_histogram"] = mode == "idle" ? json::value(nullptr) : histogram_json(latency);
  if (mode != "idle") merged["clock"] = clocks.to_json(latency.count());
  merged["broadcast_completion_us"] = nullptr;
  if (mode == "chat") merge_chat(ranges, complete, merged, warnings);
  if (mode == "broadcast") merge_broadcast(ranges, complete, clocks, merged, warnings);
  if (mode == "idle") merge_idle(ranges, warnings, merged);
  merged["warnings"] = warnings;
  // Measured per host (hosts[]) or on the server's host, not by a merge.
  merged["cpu"] = nullptr;
  if (!merged.contains("memory"))
    merged["memory"] = json::object{{"per_connection", json::object{{"rss_bytes", nullptr}, {"system_bytes", nullptr}}},
                                    {"server_host", nullptr}};
  merged["ramp"] = nullptr;
  merged["ceiling"] = nullptr;
  return merged;
}

}  // namespace loadgen
