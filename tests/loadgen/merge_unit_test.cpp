// Unit tests of `loadgen merge`: histograms written to a report and merged give the
// percentiles of one histogram over the union, loss is counted over every slice with lost
// and outstanding told apart per pair, and reports that are not slices of one run are refused.
#include <gtest/gtest.h>
#include <random>

#include "merge.hpp"
#include "metrics.hpp"
#include "report.hpp"

using namespace loadgen;
namespace json = boost::json;

// A histogram as a report carries it, read back from its text.
static LatencyRecorder through_report(const LatencyRecorder& recorder) {
  return histogram_from_json(json::parse(json::serialize(histogram_json(recorder))));
}

TEST(MergeHistogram, MergedPercentilesEqualThoseOfTheUnion) {
  std::mt19937_64 random(13);
  // Three hosts with different distributions: a fast one, a slow one, one with a long tail.
  std::lognormal_distribution<double> fast(std::log(80'000.0), 0.3), slow(std::log(400'000.0), 0.5), tail(std::log(150'000.0), 1.5);
  LatencyRecorder hosts[3], whole;
  for (int i = 0; i < 200'000; ++i) {
    const int host = i % 3;
    const auto value = static_cast<std::int64_t>(host == 0 ? fast(random) : host == 1 ? slow(random) : tail(random));
    hosts[host].record(value);
    whole.record(value);
  }
  LatencyRecorder merged;
  for (const auto& host : hosts) merged.merge(through_report(host));
  EXPECT_EQ(merged.count(), whole.count());
  EXPECT_EQ(merged.max(), whole.max());
  EXPECT_EQ(merged.nonempty_buckets(), whole.nonempty_buckets());
  for (double q : {0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0}) EXPECT_EQ(merged.percentile(q), whole.percentile(q)) << "q " << q;
  // Only non-empty buckets are written.
  EXPECT_EQ(histogram_json(hosts[0]).as_object().at("buckets").as_array().size(), hosts[0].nonempty_buckets().size());
  EXPECT_TRUE(histogram_json(LatencyRecorder()).is_null());
}

TEST(MergeHistogram, ABucketCountThatDoesNotAddUpIsAnError) {
  LatencyRecorder r;
  r.record(1000);
  json::value h = histogram_json(r);
  h.as_object()["count"] = 2;
  EXPECT_THROW(histogram_from_json(h), std::runtime_error);
}

namespace {

// A slice report of a chat run: clients [offset, offset + clients) of `total` in rooms of
// room_size, every one of them sending `sent` lines, each receiver having every line of
// every room member in its report.
json::object slice_report(std::uint32_t offset, std::uint32_t clients, std::uint32_t total, std::uint32_t room_size, std::uint64_t sent,
                          std::int64_t latency_ns) {
  LatencyRecorder latency;
  json::array ids, sent_counts, receivers;
  for (std::uint32_t id = offset; id < offset + clients; ++id) {
    ids.push_back(id);
    sent_counts.push_back(sent);
    latency.record(latency_ns + id);
    const std::uint32_t room_first = id / room_size * room_size;
    json::array next, gaps;
    for (std::uint32_t s = room_first; s < std::min(room_first + room_size, total); ++s) {
      next.push_back(s == id ? 0 : sent);
      gaps.push_back(0);
    }
    receivers.push_back(json::object{{"id", id}, {"open", true}, {"room_first", room_first}, {"next", next}, {"gaps", gaps},
                                     {"duplicated", 0}, {"reordered", 0}});
  }
  json::object step{{"rate", 5.0},
                    {"latency_histogram", histogram_json(latency)},
                    {"throughput", json::object{{"sent_per_s", 10.0}, {"deliveries_per_s", 20.0}}},
                    {"late_sends", 0},
                    {"late_sends_stalled", 0},
                    {"cross_slice_samples", 0},
                    {"start_late_ms", -100.0}};
  return json::object{
      {"mode", "chat"},
      {"clients_requested", clients},
      {"clients_connected", clients},
      {"limit_hit", nullptr},
      {"machine", json::object{{"git_commit", "abc"}, {"git_dirty", false}, {"hostname", "h" + std::to_string(offset)}}},
      {"options", json::object{{"room_size", room_size}, {"rate", json::array{5.0}}, {"duration_s", 1.0}, {"warmup_s", 0.0}, {"size", 64},
                               {"tick_us", 250}, {"start_at_ms", 1}, {"find_ceiling", false}, {"clock_offset_ms", 0.0},
                               {"protocol", "chat"}}},
      {"slice", json::object{{"clients_total", total}, {"client_offset", offset}, {"clients", clients}}},
      {"latency_histogram", histogram_json(latency)},
      {"rate_steps", json::array{step}},
      {"lines", json::object{{"unknown", 0}, {"own_copies", 0}}},
      {"clock", json::object{{"cross_slice_deliveries_untimed", 0}, {"measured_offset_ns", nullptr}, {"measured_offset_bound_ns", nullptr},
                             {"cross_slice_samples", 0}, {"cross_slice_min_latency_us", nullptr}}},
      {"cpu", json::object{{"loadgen_cpu_fraction", 0.1}, {"loadgen_saturated", false}}},
      {"warnings", json::array{}},
      {"loss_detail", json::object{{"senders", json::object{{"id", ids}, {"sent", sent_counts}}}, {"receivers", receivers}}},
  };
}

json::object& receiver(json::object& report, std::uint32_t id) {
  for (auto& r : report["loss_detail"].as_object()["receivers"].as_array())
    if (r.as_object().at("id") == id) return r.as_object();
  throw std::logic_error("no receiver " + std::to_string(id));
}

}  // namespace

TEST(MergeReports, CountsOverEverySliceWithRoomsSpanningThem) {
  // 10 clients in rooms of 3: rooms {0,1,2} {3,4,5} {6,7,8} {9}; slices 0-3, 4-7, 8-9.
  std::vector<SliceReport> slices{{"a.json", slice_report(0, 4, 10, 3, 20, 1000)},
                                  {"b.json", slice_report(4, 4, 10, 3, 20, 2000)},
                                  {"c.json", slice_report(8, 2, 10, 3, 20, 3000)}};
  // Receiver 3 (slice a) lacks line 5 of sender 4 (slice b) but has later ones: lost. It has
  // sender 5's lines 0-16 only: 3 outstanding. Receiver 8 (slice c) has line 19 of sender 7
  // twice.
  receiver(slices[0].report, 3)["gaps"].as_array()[1] = 1;
  receiver(slices[0].report, 3)["next"].as_array()[2] = 17;
  receiver(slices[2].report, 8)["duplicated"] = 1;
  // Copies of their own lines a broker handed back (Redis) are summed, apart from deliveries.
  slices[0].report["lines"].as_object()["own_copies"] = 80;
  slices[1].report["lines"].as_object()["own_copies"] = 80;
  const json::object merged = merge_reports(slices);
  const json::object& lines = merged.at("lines").as_object();
  EXPECT_EQ(lines.at("own_copies"), 160);
  // Expected: rooms of 3 -> 3 x 2 x 20 each, the room of one -> 0.
  EXPECT_EQ(lines.at("sent"), 200);
  EXPECT_EQ(lines.at("expected"), 3 * 3 * 2 * 20);
  EXPECT_EQ(lines.at("lost"), 1);
  EXPECT_EQ(lines.at("outstanding"), 3);
  EXPECT_EQ(lines.at("duplicated"), 1);
  EXPECT_EQ(lines.at("delivered"), 3 * 3 * 2 * 20 - 1 - 3 + 1);
  EXPECT_EQ(lines.at("receivers_with_loss"), 1);
  EXPECT_TRUE(merged.at("missing_clients").as_array().empty());
  EXPECT_TRUE(merged.at("limit_hit").is_null());
  EXPECT_EQ(merged.at("hosts").as_array().size(), 3u);
  EXPECT_EQ(merged.at("latency_us").as_object().at("count"), 10);
  EXPECT_EQ(merged.at("clients_connected"), 10);
}

TEST(MergeReports, AnyHostsLimitIsTheRunsAndALateHostMarksItsStep) {
  std::vector<SliceReport> slices{{"a.json", slice_report(0, 5, 10, 5, 20, 1000)}, {"b.json", slice_report(5, 5, 10, 5, 20, 1000)}};
  slices[1].report["limit_hit"] = "fd limit";
  slices[1].report["rate_steps"].as_array()[0].as_object()["start_late_ms"] = 250.0;
  const json::object merged = merge_reports(slices);
  EXPECT_EQ(merged.at("limit_hit"), "b.json: fd limit");
  const json::array& late = merged.at("rate_steps").as_array()[0].as_object().at("late_hosts").as_array();
  ASSERT_EQ(late.size(), 1u);
  EXPECT_NE(std::string(late[0].as_string()).find("b.json"), std::string::npos);
}

TEST(MergeReports, AMissingSliceIsNamedAndLossIsNotGuessed) {
  std::vector<SliceReport> slices{{"a.json", slice_report(0, 4, 12, 3, 20, 1000)}, {"c.json", slice_report(8, 4, 12, 3, 20, 1000)}};
  const json::object merged = merge_reports(slices);
  EXPECT_EQ(json::serialize(merged.at("missing_clients")), "[[4,7]]");
  EXPECT_TRUE(merged.at("lines").as_object().at("expected").is_null());
  EXPECT_TRUE(merged.at("lines").as_object().at("lost").is_null());
}

TEST(MergeReports, RefusesOverlapsOtherVersionsOtherOptionsAndOtherModes) {
  auto refused = [](std::vector<SliceReport> slices, const std::string& says) {
    try {
      merge_reports(slices);
    } catch (const MergeRefused& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "merged, expected a refusal saying " << says;
  };
  refused({{"a.json", slice_report(0, 6, 10, 3, 20, 1)}, {"b.json", slice_report(5, 5, 10, 3, 20, 1)}}, "overlapping client slices: a.json runs clients 0-5, b.json runs 5-9");
  auto other_build = slice_report(5, 5, 10, 3, 20, 1);
  other_build["machine"].as_object()["git_commit"] = "def";
  refused({{"a.json", slice_report(0, 5, 10, 3, 20, 1)}, {"b.json", other_build}}, "different loadgen versions");
  auto other_rooms = slice_report(5, 5, 10, 3, 20, 1);
  other_rooms["options"].as_object()["room_size"] = 4;
  refused({{"a.json", slice_report(0, 5, 10, 3, 20, 1)}, {"b.json", other_rooms}}, "option room_size differs");
  auto other_protocol = slice_report(5, 5, 10, 3, 20, 1);
  other_protocol["options"].as_object()["protocol"] = "nats";
  refused({{"a.json", slice_report(0, 5, 10, 3, 20, 1)}, {"b.json", other_protocol}}, "option protocol differs");
  auto broadcast = slice_report(5, 5, 10, 3, 20, 1);
  broadcast["mode"] = "broadcast";
  refused({{"a.json", slice_report(0, 5, 10, 3, 20, 1)}, {"b.json", broadcast}}, "different modes: a.json is a \"chat\" report, b.json is \"broadcast\"");
  auto old = slice_report(5, 5, 10, 3, 20, 1);
  old.erase("loss_detail");
  refused({{"a.json", slice_report(0, 5, 10, 3, 20, 1)}, {"b.json", old}}, "without loss_detail");
}

// Hosts whose clocks were measured: their offsets and bounds are listed, the cross-slice
// samples counted apart from the exact ones, and their error bound is the two largest
// bounds added (a sample's sender and receiver at worst). A host without a measurement
// contributes no bound and no cross-slice sample.
TEST(MergeReports, MeasuredClocksStateTheirBoundBesideTheCrossSliceSamples) {
  std::vector<SliceReport> slices{{"a.json", slice_report(0, 4, 12, 3, 20, 1000)},
                                  {"b.json", slice_report(4, 4, 12, 3, 20, 1000)},
                                  {"c.json", slice_report(8, 4, 12, 3, 20, 1000)}};
  const std::int64_t offsets[] = {-2'000'000, 300'000'000, 0}, bounds[] = {30'000, 50'000, 40'000};
  const std::uint64_t cross[] = {3, 5, 0};
  const double least[] = {12.5, 7.25, 0};
  for (int i = 0; i < 2; ++i) {
    json::object& clock = slices[i].report["clock"].as_object();
    clock["measured_offset_ns"] = offsets[i];
    clock["measured_offset_bound_ns"] = bounds[i];
    clock["cross_slice_samples"] = cross[i];
    clock["cross_slice_min_latency_us"] = least[i];
    slices[i].report["rate_steps"].as_array()[0].as_object()["cross_slice_samples"] = cross[i];
  }
  slices[2].report["clock"].as_object()["cross_slice_deliveries_untimed"] = 6;
  const json::object merged = merge_reports(slices);
  const json::object& clock = merged.at("clock").as_object();
  EXPECT_EQ(clock.at("samples_used"), 12);
  EXPECT_EQ(clock.at("cross_slice_samples"), 8);
  EXPECT_EQ(clock.at("same_process_samples"), 4);
  EXPECT_EQ(clock.at("cross_slice_error_bound_us"), 80.0);  // 50 + 30: c's offset is unmeasured
  EXPECT_EQ(clock.at("cross_slice_min_latency_us"), 7.25);
  EXPECT_EQ(clock.at("cross_slice_deliveries_untimed"), 6);
  EXPECT_EQ(merged.at("rate_steps").as_array()[0].as_object().at("cross_slice_samples"), 8);
  const json::array& hosts = merged.at("hosts").as_array();
  EXPECT_EQ(hosts[1].as_object().at("clock_offset_ms"), 300.0);
  EXPECT_EQ(hosts[1].as_object().at("clock_offset_bound_ms"), 0.05);
  EXPECT_TRUE(hosts[2].as_object().at("clock_offset_bound_ms").is_null());

  // Nothing measured: no bound is stated, and nothing is timed across slices.
  std::vector<SliceReport> unmeasured{{"a.json", slice_report(0, 4, 8, 3, 20, 1000)}, {"b.json", slice_report(4, 4, 8, 3, 20, 1000)}};
  const json::object plain = merge_reports(unmeasured);
  EXPECT_TRUE(plain.at("clock").as_object().at("cross_slice_error_bound_us").is_null());
  EXPECT_EQ(plain.at("clock").as_object().at("cross_slice_samples"), 0);
  EXPECT_TRUE(plain.at("hosts").as_array()[0].as_object().at("clock_offset_bound_ms").is_null());
}

namespace {

// A slice report of a broadcast run: clients [offset, offset + clients) of `total`; global
// client 0 sends `sent` messages (in the slice at offset 0); every receiver has them all,
// and this slice's slowest receiver of message m took slowest_ns + m.
json::object broadcast_slice(std::uint32_t offset, std::uint32_t clients, std::uint32_t total, std::uint64_t sent, std::int64_t slowest_ns,
                             std::uint32_t messages = 4) {
  LatencyRecorder latency;
  json::array receivers, message_receivers, message_max;
  std::uint64_t here = 0;
  for (std::uint32_t id = offset; id < offset + clients; ++id) {
    if (id == 0) continue;
    ++here;
    for (std::uint64_t m = 0; m < sent; ++m) latency.record(slowest_ns);
    receivers.push_back(json::object{{"id", id}, {"open", true}, {"room_first", 0}, {"next", json::array{sent}}, {"gaps", json::array{0}},
                                     {"duplicated", 0}, {"reordered", 0}});
  }
  for (std::uint32_t m = 0; m < messages; ++m) {
    message_receivers.push_back(m < sent ? here : 0);
    message_max.push_back(m < sent && here > 0 ? json::value(slowest_ns + m) : json::value(nullptr));
  }
  const bool sender = offset == 0;
  auto phase = [](const char* name, double late) { return json::object{{"phase", name}, {"start_at_unix_ms", 1000}, {"start_late_ms", late}}; };
  return json::object{
      {"mode", "broadcast"},
      {"clients_requested", clients},
      {"clients_connected", clients},
      {"limit_hit", nullptr},
      {"machine", json::object{{"git_commit", "abc"}, {"git_dirty", false}, {"hostname", "h" + std::to_string(offset)}}},
      {"options", json::object{{"messages", messages}, {"interval_ms", 10.0}, {"size", 64}, {"drain_s", 1.0}, {"start_at_ms", 1000}, {"clock_offset_ms", 0.0},
                               {"protocol", "chat"}}},
      {"slice", json::object{{"clients_total", total}, {"client_offset", offset}, {"clients", clients}}},
      {"latency_histogram", histogram_json(latency)},
      {"lines", json::object{{"unknown", 0}, {"sync_sent", sender ? 18 : 0}, {"sync_received", 18 * here}, {"late_sends", 0}, {"late_sends_stalled", 0},
                             {"own_copies", 0}}},
      {"clock", json::object{{"cross_slice_deliveries_untimed", 0}, {"measured_offset_ns", 0}, {"measured_offset_bound_ns", 20'000},
                             {"cross_slice_samples", sender ? 0 : sent * here}, {"cross_slice_min_latency_us", nullptr}}},
      {"cpu", json::object{{"loadgen_cpu_fraction", 0.1}, {"loadgen_saturated", false}}},
      {"throughput", json::object{{"sent_per_s", sender ? 100.0 : 0.0}, {"deliveries_per_s", 100.0 * static_cast<double>(here)}}},
      {"warnings", json::array{}},
      {"phases", json::array{phase("sync", -900.0), phase("broadcast", -99.0)}},
      {"loss_detail", json::object{{"senders", json::object{{"id", sender ? json::array{0} : json::array{}}, {"sent", sender ? json::array{sent} : json::array{}}}},
                                   {"receivers", receivers}}},
      {"broadcast_detail", json::object{{"message_receivers", message_receivers}, {"message_max_latency_ns", message_max}}},
  };
}

}  // namespace

// Broadcast over three slices: counts summed, expected = sent x every slice's receivers,
// each message's completion the largest of the slices' slowest receivers, loss per receiver
// against the sender slice's count.
TEST(MergeBroadcast, CompletionIsTheSlowestSliceAndLossIsGlobal) {
  std::vector<SliceReport> slices{{"a.json", broadcast_slice(0, 4, 12, 4, 1'000'000)},
                                  {"b.json", broadcast_slice(4, 4, 12, 4, 5'000'000)},
                                  {"c.json", broadcast_slice(8, 4, 12, 4, 3'000'000)}};
  // Receiver 9 lacks message 1 but has 2 and 3: lost. Receiver 10 has only 0-1: 2 outstanding.
  json::object& r9 = slices[2].report["loss_detail"].as_object()["receivers"].as_array()[1].as_object();
  r9["gaps"] = json::array{1};
  json::object& r10 = slices[2].report["loss_detail"].as_object()["receivers"].as_array()[2].as_object();
  r10["next"] = json::array{2};
  const json::object merged = merge_reports(slices);
  const json::object& lines = merged.at("lines").as_object();
  EXPECT_EQ(merged.at("mode"), "broadcast");
  EXPECT_EQ(lines.at("sent"), 4);
  EXPECT_EQ(lines.at("receivers"), 11);
  EXPECT_EQ(lines.at("expected"), 44);
  EXPECT_EQ(lines.at("delivered"), 44 - 1 - 2);
  EXPECT_EQ(lines.at("lost"), 1);
  EXPECT_EQ(lines.at("outstanding"), 2);
  EXPECT_EQ(lines.at("sync_sent"), 18);
  EXPECT_EQ(lines.at("sync_received"), 18 * 11);
  const json::object& completion = merged.at("broadcast_completion_us").as_object();
  EXPECT_EQ(completion.at("count"), 4);
  EXPECT_EQ(completion.at("max"), 5000.003);  // b's slowest receiver of message 3
  EXPECT_EQ(completion.at("error_bound_us"), 40.0);
  EXPECT_EQ(merged.at("latency_us").as_object().at("count"), 44);

  // A slice that could not time the sender's lines (its clock unmeasured): no completion.
  slices[1].report["clock"].as_object()["cross_slice_deliveries_untimed"] = 12;
  EXPECT_TRUE(merge_reports(slices).at("broadcast_completion_us").is_null());

  // Without the sender's slice nothing is known of what was sent.
  const json::object partial = merge_reports({slices[1], slices[2]});
  EXPECT_EQ(json::serialize(partial.at("missing_clients")), "[[0,3]]");
  EXPECT_TRUE(partial.at("lines").as_object().at("expected").is_null());
}

TEST(MergeBroadcast, ALateHostMarksItsPhaseAndBroadcastIsNotMixedWithChat) {
  std::vector<SliceReport> slices{{"a.json", broadcast_slice(0, 6, 12, 4, 1000)}, {"b.json", broadcast_slice(6, 6, 12, 4, 1000)}};
  slices[1].report["phases"].as_array()[0].as_object()["start_late_ms"] = 1500.0;
  const json::object merged = merge_reports(slices);
  const json::array& sync_late = merged.at("phases").as_array()[0].as_object().at("late_hosts").as_array();
  ASSERT_EQ(sync_late.size(), 1u);
  EXPECT_NE(std::string(sync_late[0].as_string()).find("b.json: 1500 ms late"), std::string::npos) << sync_late;
  EXPECT_TRUE(merged.at("phases").as_array()[1].as_object().at("late_hosts").as_array().empty());
  try {
    merge_reports({{"a.json", broadcast_slice(0, 6, 12, 4, 1000)}, {"b.json", slice_report(6, 6, 12, 3, 20, 1000)}});
    ADD_FAILURE() << "a chat and a broadcast report were merged";
  } catch (const MergeRefused& e) {
    EXPECT_NE(std::string(e.what()).find("different modes"), std::string::npos) << e.what();
  }
  try {
    merge_reports({{"a.json", broadcast_slice(0, 7, 12, 4, 1000)}, {"b.json", broadcast_slice(6, 6, 12, 4, 1000)}});
    ADD_FAILURE() << "overlapping broadcast slices were merged";
  } catch (const MergeRefused& e) {
    EXPECT_NE(std::string(e.what()).find("overlapping client slices: a.json runs clients 0-6, b.json runs 6-11"), std::string::npos) << e.what();
  }
}
