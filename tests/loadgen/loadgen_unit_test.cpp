// Unit tests of loadgen's measurement primitives: the open-loop schedule, the latency
// recorder against exact percentiles, loss tracking (gaps vs lines not arrived yet),
// throughput by arrival time, the least-squares slope, the chat protocol and line format,
// and the server host's memory parts against their whole.
#include <algorithm>
#include <cmath>
#include <gtest/gtest.h>
#include <random>

#include "metrics.hpp"
#include "protocol.hpp"
#include "scenario_common.hpp"
#include "scenarios.hpp"

using namespace loadgen;

TEST(OpenLoopSchedule, IntendedTimesFollowTheRateWithoutDrift) {
  const OpenLoopSchedule schedule(1'000, 3.0);  // 3 per second: 333333333.3 ns apart
  EXPECT_EQ(schedule.intended_ns(0), 1'000);
  EXPECT_EQ(schedule.intended_ns(3), 1'000 + 1'000'000'000);
  // Each time is computed from the start, so no rounding error accumulates.
  EXPECT_EQ(schedule.intended_ns(3'000'000), 1'000 + 1'000'000'000'000'000);
}

TEST(OpenLoopSchedule, DueByCountsSendsAtOrBeforeNow) {
  const OpenLoopSchedule schedule(1'000'000, 1000.0);  // one per ms
  EXPECT_EQ(schedule.due_by(0), 0u);
  EXPECT_EQ(schedule.due_by(999'999), 0u);
  EXPECT_EQ(schedule.due_by(1'000'000), 1u);
  EXPECT_EQ(schedule.due_by(1'999'999), 1u);
  EXPECT_EQ(schedule.due_by(2'000'000), 2u);
  // A stalled sender that wakes late owes every send up to now: the open loop.
  EXPECT_EQ(schedule.due_by(1'000'000 + 500'000'000), 501u);
  for (std::uint64_t k = 0; k < 5000; ++k) {
    EXPECT_EQ(schedule.due_by(schedule.intended_ns(k)), k + 1);
    EXPECT_EQ(schedule.due_by(schedule.intended_ns(k) - 1), k);
  }
}

TEST(OpenLoopSchedule, ATickPutsEverySendOnTheGridWithoutLosingAny) {
  const std::int64_t tick = 250'000;
  for (const double rate : {700.0, 10'000.0}) {  // fewer and more sends than grid points
    const OpenLoopSchedule exact(1'234'567, rate), grid(1'234'567, rate, tick);
    std::uint64_t due = 0;  // sends whose rounded time is at or before t, counted one by one
    for (std::uint64_t k = 0; k < 5000; ++k) {
      const std::int64_t t = grid.intended_ns(k);
      EXPECT_EQ(t % tick, 0) << k;
      // Rounded up, never by a whole tick: over any span the rate stays the rate.
      EXPECT_GE(t, exact.intended_ns(k)) << k;
      EXPECT_LT(t - exact.intended_ns(k), tick) << k;
      if (k > 0) {
        EXPECT_GE(t, grid.intended_ns(k - 1)) << k;  // order kept
      }
      // due_by agrees with the rounded times: a wake-up on the grid sends exactly these.
      while (grid.intended_ns(due) <= t) ++due;
      EXPECT_EQ(grid.due_by(t), due) << k;
      EXPECT_EQ(grid.due_by(t + tick - 1), due) << k;  // nothing new falls due between grid points
      EXPECT_LE(grid.due_by(t - 1), k) << k;
    }
  }
}

TEST(LatencyRecorder, BucketsAreContiguousAndNarrow) {
  for (std::size_t b = 0; b + 1 < LatencyRecorder::bucket_of(INT64_MAX); ++b) {
    ASSERT_EQ(LatencyRecorder::bucket_high(b) + 1, LatencyRecorder::bucket_low(b + 1)) << b;
    const auto low = LatencyRecorder::bucket_low(b), high = LatencyRecorder::bucket_high(b);
    ASSERT_EQ(LatencyRecorder::bucket_of(low), b);
    ASSERT_EQ(LatencyRecorder::bucket_of(high), b);
    ASSERT_LE(static_cast<double>(high - low), static_cast<double>(low) / 128.0 + 1.0) << b;
  }
}

TEST(LatencyRecorder, PercentilesWithinOnePercentOfExact) {
  std::mt19937_64 random(42);
  std::lognormal_distribution<double> distribution(12.0, 1.5);  // ~160 us median, long tail
  std::vector<std::int64_t> values;
  LatencyRecorder recorder;
  for (int i = 0; i < 100'000; ++i) {
    const auto v = static_cast<std::int64_t>(distribution(random));
    values.push_back(v);
    recorder.record(v);
  }
  std::sort(values.begin(), values.end());
  for (const double q : {0.5, 0.9, 0.99, 0.999, 1.0}) {
    // Nearest rank: the smallest value with at least q of the values at or below it.
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
    const auto exact = static_cast<double>(values[rank - 1]);
    EXPECT_NEAR(static_cast<double>(recorder.percentile(q)), exact, exact * 0.01) << "q=" << q;
  }
  EXPECT_EQ(recorder.max(), values.back());
  EXPECT_EQ(recorder.count(), values.size());
}

TEST(LatencyRecorder, SmallValuesAreExactAndMergeAdds) {
  LatencyRecorder a, b;
  for (int v = 1; v <= 100; ++v) (v % 2 ? a : b).record(v);
  a.merge(b);
  EXPECT_EQ(a.count(), 100u);
  EXPECT_EQ(a.percentile(0.5), 50);
  EXPECT_EQ(a.percentile(0.99), 99);
  EXPECT_EQ(a.max(), 100);
}

TEST(SenderTrack, CountsDuplicatesReorderingAndGaps) {
  SenderTrack track;
  for (std::uint64_t seq : {0, 1, 2, 4, 3, 3, 5, 0}) track.on_sequence(seq);
  EXPECT_EQ(track.received, 8u);
  EXPECT_EQ(track.duplicated, 2u);  // the second 3 and the second 0
  EXPECT_EQ(track.reordered, 1u);   // 3 after 4
  EXPECT_EQ(track.unique_received(), 6u);
  SenderTrack gap;
  for (std::uint64_t seq : {0, 1, 5}) gap.on_sequence(seq);  // 2, 3, 4 lost
  EXPECT_EQ(gap.unique_received(), 3u);
  EXPECT_EQ(gap.next_expected, 6u);
}

TEST(SenderTrack, MissingLinesSplitIntoGapsAndTail) {
  SenderTrack track;
  for (std::uint64_t seq : {0, 1, 5}) track.on_sequence(seq);
  // The sender sent 0..7: 2, 3, 4 are gaps behind 5 (lost); 6, 7 may still be queued.
  auto missing = track.missing(8, true);
  EXPECT_EQ(missing.lost, 3u);
  EXPECT_EQ(missing.outstanding, 2u);
  // A receiver the server closed gets nothing more: its tail is lost too.
  missing = track.missing(8, false);
  EXPECT_EQ(missing.lost, 5u);
  EXPECT_EQ(missing.outstanding, 0u);
  // A gap filled later (reordered) is neither lost nor outstanding.
  track.on_sequence(3);
  missing = track.missing(8, true);
  EXPECT_EQ(missing.lost, 2u);
  EXPECT_EQ(missing.outstanding, 2u);
  // Nothing received yet: all of it outstanding, none lost.
  missing = SenderTrack{}.missing(4, true);
  EXPECT_EQ(missing.lost, 0u);
  EXPECT_EQ(missing.outstanding, 4u);
  // Everything received: nothing missing.
  SenderTrack complete;
  for (std::uint64_t seq = 0; seq < 4; ++seq) complete.on_sequence(seq);
  missing = complete.missing(4, true);
  EXPECT_EQ(missing.lost + missing.outstanding, 0u);
  // A repeat too old for the window counts as reordered (unique); no wrap-around below zero.
  SenderTrack old_repeat;
  for (std::uint64_t seq = 0; seq < 100; ++seq) old_repeat.on_sequence(seq);
  old_repeat.on_sequence(0);
  missing = old_repeat.missing(100, true);
  EXPECT_EQ(missing.lost, 0u);
  EXPECT_EQ(missing.outstanding, 0u);
}

TEST(ArrivalWindow, CountsArrivalsInsideTheWindowPerSecondOfIt) {
  ArrivalWindow window{1'000'000'000, 3'000'000'000, 0};  // 2 s long
  for (std::int64_t t : {999'999'999LL, 1'000'000'000LL, 2'000'000'000LL, 2'999'999'999LL, 3'000'000'000LL, 5'000'000'000LL})
    window.on_arrival(t);
  EXPECT_EQ(window.arrivals, 3u);  // start included, end excluded; before and after not counted
  EXPECT_DOUBLE_EQ(window.per_second(), 1.5);
  // A server that delivers the window's lines only after it ends delivered nothing in it.
  ArrivalWindow behind{0, 1'000'000'000, 0};
  for (int i = 0; i < 1000; ++i) behind.on_arrival(1'000'000'000 + i);
  EXPECT_EQ(behind.per_second(), 0.0);
  EXPECT_EQ((ArrivalWindow{5, 5, 7}.per_second()), 0.0);  // empty window
}

TEST(LeastSquaresSlope, ExactLineAndNoisyLine) {
  EXPECT_DOUBLE_EQ(*least_squares_slope({0, 1, 2, 3}, {10, 13, 16, 19}), 3.0);
  // Points symmetric around y = 2x: the fit is exact in slope.
  EXPECT_NEAR(*least_squares_slope({0, 100, 200, 300}, {1, 199, 401, 599}), 2.0, 0.01);
  EXPECT_FALSE(least_squares_slope({5, 5, 5}, {1, 2, 3}).has_value());
  EXPECT_FALSE(least_squares_slope({1}, {1}).has_value());
}

TEST(ChatLine, RoundTripsAndPadsToSize) {
  std::string line;
  format_chat_line(line, 17, 123456, 987654321012345, 64);
  EXPECT_EQ(line.size(), 64u);
  EXPECT_EQ(line.back(), '\n');
  const auto parsed = parse_chat_line(std::string_view(line).substr(0, line.size() - 1));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->sender, 17u);
  EXPECT_EQ(parsed->seq, 123456u);
  EXPECT_EQ(parsed->intended_ns, 987654321012345);
  format_chat_line(line, 1, 2, 3, 4);  // a size below the header: header only
  EXPECT_EQ(line, "1 2 3 \n");
  EXPECT_FALSE(parse_chat_line("hello world").has_value());
  EXPECT_FALSE(parse_chat_line("/stats x=1").has_value());
}

// What loadgen reads from the server (docs/protocol.md): a line starting with a single '/'
// is a reply, told apart by its word; a "//" line and anything else is a chat line.
TEST(ChatProtocol, TellsRepliesFromChatLines) {
  EXPECT_EQ(reply_kind("/joined r3"), Reply::joined);
  EXPECT_EQ(reply_kind("/stats variant=asio lines_out=7"), Reply::stats);
  EXPECT_EQ(reply_kind("/error server-full"), Reply::server_full);
  EXPECT_EQ(reply_kind("/error bad-room"), Reply::error);
  EXPECT_EQ(reply_kind("/error server-full-ish"), Reply::error);
  EXPECT_EQ(reply_kind("/joinedx"), Reply::other);
  EXPECT_EQ(reply_kind("//joined r3"), Reply::none);
  EXPECT_EQ(reply_kind("0 1 2 xxxx"), Reply::none);
  EXPECT_EQ(reply_kind(sync_line), Reply::none);
  EXPECT_EQ(join_command(12), "/join r12\n");
  const auto stats = parse_stats_reply("/stats variant=asio lines_out=7 odd");
  EXPECT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats.at("variant"), "asio");
  EXPECT_EQ(stats.at("lines_out"), "7");
}

// A slice with a measured clock offset marks its times as the reference clock's; a line
// without the mark, padded or not, is on the sender's own clock.
TEST(ChatLine, SaysWhichClockItsTimeIsOn) {
  std::string line;
  format_chat_line(line, 17, 5, 1795996019582942742, 64, true);
  EXPECT_EQ(line.size(), 64u);
  const auto marked = parse_chat_line(std::string_view(line).substr(0, line.size() - 1));
  ASSERT_TRUE(marked.has_value());
  EXPECT_TRUE(marked->reference_clock);
  EXPECT_EQ(marked->intended_ns, 1795996019582942742);
  format_chat_line(line, 1, 2, 3, 4, true);  // below the size: the mark is kept
  EXPECT_EQ(line, "1 2 3 r \n");
  EXPECT_TRUE(parse_chat_line("1 2 3 r ")->reference_clock);
  format_chat_line(line, 17, 5, 42, 64);
  EXPECT_FALSE(parse_chat_line(std::string_view(line).substr(0, line.size() - 1))->reference_clock);
  EXPECT_FALSE(parse_chat_line("1 2 3 ")->reference_clock);
  EXPECT_FALSE(parse_chat_line("1 2 3 rx")->reference_clock);
}

// memory.server_host from synthetic steps: per connection the server's RSS grows 1000 B,
// its page tables 10 B, each end holds a 2400 B TCP socket and a 128 B epoll item, and
// loadgen's RSS grows 500 B; free memory drops by all of it (times free_scale). Of that,
// 300 B per connection comes out of the per-CPU page lists, which MemFree leaves out, and
// the page cache grows by 100 B per connection for reasons of its own: neither may move
// the whole. With slack_used, that many bytes per connection of the new objects go into
// empty slots of slabs allocated before the ramp, which neither MemFree nor Slab sees.
static std::vector<loadgen::MemorySample> memory_steps(double free_scale, std::uint64_t slack_used = 0) {
  std::vector<loadgen::MemorySample> steps;
  for (std::uint64_t n : {0u, 1000u, 2000u}) {
    loadgen::MemorySample s;
    s.clients = n;
    s.rss_bytes = 4'000'000 + 1000 * n;
    s.pte_bytes = 100'000 + 10 * n;
    s.threads = 2;
    s.loadgen_rss_bytes = 3'000'000 + 500 * n;
    s.loadgen_pte_bytes = 50'000;
    s.slab_caches = {{"TCP", 1'000'000 + 2 * 2400 * n}, {"eventpoll_epi", 50'000 + 2 * 128 * n}, {"kmalloc-64", 70'000}};
    const auto everything = static_cast<std::uint64_t>(free_scale * static_cast<double>((1000 + 10 + 2 * 2400 + 2 * 128 + 500) * n));
    s.per_cpu_free_bytes = 40'000'000 - 300 * n;
    s.page_cache_bytes = 200'000'000 + 100 * n;
    s.mem_free_bytes = 8'000'000'000 - everything + 300 * n - 100 * n + slack_used * n;
    s.slab_slack_bytes = 40'000'000 - slack_used * n;
    s.mem_available_bytes = 9'000'000'000 - everything;
    s.anon_pages_bytes = 500'000'000 + 1500 * n;
    s.slab_bytes = 90'000'000 + 2 * (2400 + 128) * n - slack_used * n;
    s.kernel_stack_bytes = 3'000'000;
    s.page_tables_bytes = 10'000'000 + 10 * n;
    steps.push_back(s);
  }
  return steps;
}

static loadgen::ClientEnd client_end_of_2000() {
  return {2000, {{"TCP", 2400 * 2000}, {"eventpoll_epi", 128 * 2000}}, 0.2};
}

TEST(ServerHost, PartsLeaveOutTheClientEndAndAddUpToTheWhole) {
  const auto host = loadgen::server_host_json(loadgen::server_host(memory_steps(1.0), client_end_of_2000(), 16384));
  EXPECT_DOUBLE_EQ(host.at("rss_bytes").as_double(), 1000);
  EXPECT_DOUBLE_EQ(host.at("pte_bytes").as_double(), 10);
  EXPECT_DOUBLE_EQ(host.at("kernel_stack_bytes").as_double(), 0);
  EXPECT_DOUBLE_EQ(host.at("socket_bytes").as_double(), 2400);
  EXPECT_DOUBLE_EQ(host.at("other_kernel_bytes").as_double(), 128);
  EXPECT_DOUBLE_EQ(host.at("other_caches").as_object().at("eventpoll_epi").as_double(), 128);
  EXPECT_FALSE(host.at("other_caches").as_object().contains("kmalloc-64"));  // did not move
  EXPECT_DOUBLE_EQ(host.at("client_end_bytes").as_double(), 2528);
  EXPECT_DOUBLE_EQ(host.at("loadgen_bytes").as_double(), 500);
  EXPECT_DOUBLE_EQ(host.at("parts_bytes").as_double(), 3538);
  EXPECT_DOUBLE_EQ(host.at("whole_bytes").as_double(), 3538);
  EXPECT_DOUBLE_EQ(host.at("whole_meminfo_bytes").as_double(), 1500 + 2 * 2528 + 10 - 2528 - 500);
  EXPECT_DOUBLE_EQ(host.at("per_cpu_free_bytes").as_double(), -300);
  EXPECT_DOUBLE_EQ(host.at("page_cache_bytes").as_double(), 100);
  EXPECT_TRUE(host.at("flags").as_array().empty()) << boost::json::serialize(host.at("flags"));
}

// After other work the slab caches hold empty slots (freed sockets, inodes, dentries), and
// the first few hundred connections fill them instead of taking pages: at 400 connections
// free memory once dropped by kilobytes per connection less than the objects added, and
// every point was flagged. The slots filled are counted back into both wholes.
TEST(ServerHost, ObjectsInSlotsFreedBeforeTheRampStillAddUpToTheWhole) {
  const auto host =
      loadgen::server_host_json(loadgen::server_host(memory_steps(1.0, 2400), client_end_of_2000(), 16384));
  EXPECT_DOUBLE_EQ(host.at("slab_slack_used_bytes").as_double(), 2400);
  EXPECT_DOUBLE_EQ(host.at("parts_bytes").as_double(), 3538);
  EXPECT_DOUBLE_EQ(host.at("whole_bytes").as_double(), 3538);
  EXPECT_DOUBLE_EQ(host.at("whole_meminfo_bytes").as_double(), 1500 + 2 * 2528 + 10 - 2528 - 500);
  EXPECT_TRUE(host.at("flags").as_array().empty()) << boost::json::serialize(host.at("flags"));
}

TEST(ServerHost, FlagsAWholeBelowRssOrFarFromTheParts) {
  // MemFree dropped by a fifth of what was allocated: the whole (1000 B less the client
  // side) is below the server's RSS and far from the parts.
  const auto host = loadgen::server_host_json(loadgen::server_host(memory_steps(0.2), client_end_of_2000(), 16384));
  const auto flags = boost::json::serialize(host.at("flags"));
  EXPECT_NE(flags.find("smaller than the server's own RSS"), std::string::npos) << flags;
  // 30% more than allocated: parts and whole disagree by more than 20%, the whole is above RSS.
  const auto more_host = loadgen::server_host_json(loadgen::server_host(memory_steps(1.3), client_end_of_2000(), 16384));
  const auto more = boost::json::serialize(more_host.at("flags"));
  EXPECT_NE(more.find("disagree"), std::string::npos) << more;
  EXPECT_EQ(more.find("RSS"), std::string::npos) << more;
}

// The per-CPU slabs' free slots are counted active by /proc/slabinfo: objects put there show
// in no reading. Parts and whole that differ by less than those slabs of the caches the ramp
// grew (over the connections it added) are not judged; at a few hundred connections, after
// the slack above was counted back, that was still every point of --quick.
TEST(ServerHost, PartsAndWholeCloserThanThePerCpuSlabsAreNotADisagreement) {
  // memory_steps(1.3): the whole is 30% of everything allocated, 1 970 B per connection, above the parts.
  auto with_reserve = [](std::map<std::string, std::uint64_t> reserve) {
    auto steps = memory_steps(1.3);
    steps.front().slab_cpu_reserve = reserve;  // at the start and at the end: counted twice
    steps.back().slab_cpu_reserve = std::move(reserve);
    return loadgen::server_host_json(loadgen::server_host(steps, client_end_of_2000(), 16384));
  };
  const auto within = with_reserve({{"TCP", 2'000'000}, {"kmalloc-64", 9'000'000}});  // 2 x 2 MB over 2 000
  EXPECT_DOUBLE_EQ(within.at("whole_resolution_bytes").as_double(), 2000);  // kmalloc-64 did not grow
  EXPECT_TRUE(within.at("within_resolution").as_bool());
  EXPECT_TRUE(within.at("flags").as_array().empty()) << boost::json::serialize(within.at("flags"));
  const auto beyond = with_reserve({{"TCP", 1'000'000}, {"eventpoll_epi", 250'000}});  // 1 250 B
  EXPECT_DOUBLE_EQ(beyond.at("whole_resolution_bytes").as_double(), 1250);
  EXPECT_FALSE(beyond.at("within_resolution").as_bool());
  EXPECT_NE(boost::json::serialize(beyond.at("flags")).find("disagree"), std::string::npos);
  const auto unknown = with_reserve({});
  EXPECT_TRUE(unknown.at("whole_resolution_bytes").is_null());
  EXPECT_NE(boost::json::serialize(unknown.at("flags")).find("disagree"), std::string::npos);
}

TEST(ServerHost, WithoutTheClientEndThePointIsFlagged) {
  const auto host = loadgen::server_host_json(loadgen::server_host(memory_steps(1.0), std::nullopt, 16384));
  EXPECT_TRUE(host.at("client_end_bytes").is_null());
  EXPECT_NE(boost::json::serialize(host.at("flags")).find("client end not measured"), std::string::npos);
}

TEST(OffCore, CountsOnlyTimeOffTheCorePastTheDeadline) {
  constexpr std::int64_t ms = 1'000'000;
  // Woke at 0 (CPU clock 50 ms), next send due at 1 ms; now 5 ms.
  // Slept until the deadline, then ran the whole time: never off its core when it mattered.
  EXPECT_EQ(off_core_after_deadline_ns(0, 50 * ms, 5 * ms, 54 * ms, 1 * ms), 0);
  // Ran 1 ms in all: of the 4 ms it did not, 1 ms was its sleep until the deadline.
  EXPECT_EQ(off_core_after_deadline_ns(0, 50 * ms, 5 * ms, 51 * ms, 1 * ms), 3 * ms);
  // Never ran at all: off its core from the deadline on, and no longer than that.
  EXPECT_EQ(off_core_after_deadline_ns(0, 50 * ms, 5 * ms, 50 * ms, 1 * ms), 4 * ms);
  // Busy from the wake-up past the deadline: its own work, whatever it did not run before.
  EXPECT_EQ(off_core_after_deadline_ns(0, 50 * ms, 5 * ms, 55 * ms, 1 * ms), 0);
  // A deadline already past at the wake-up counts from the wake-up.
  EXPECT_EQ(off_core_after_deadline_ns(2 * ms, 50 * ms, 5 * ms, 50 * ms, 1 * ms), 3 * ms);
}
