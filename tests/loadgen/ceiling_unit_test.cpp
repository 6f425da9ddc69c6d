// Unit tests of the ceiling search (loadgen/ceiling.*) against simulated servers, and of
// the CPU figures it judges by: the one loadgen CPU fraction and per-core busy time.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <sched.h>
#include <thread>
#include <time.h>
#include <unistd.h>

#include "ceiling.hpp"
#include "metrics.hpp"

using namespace loadgen;

namespace {

// A simulated server whose deliveries keep up up to `capacity` lines/s per client, and a
// loadgen that runs out of CPU above `loadgen_limit`.
struct Simulated {
  double capacity = 1e9, loadgen_limit = 1e9, lose_above = 1e9;
  std::optional<double> server_cores = 0.25;  // a server held to a quarter of a core; nullopt: no --server-pid
  bool keeps_up_late = false;  // above capacity it still delivers everything, with p99 over the bar
  int die_at_step = -1;
  std::vector<int> late_at_steps;  // 1-based steps whose window has 5% of its sends late
  std::vector<double> rates;

  StepResult operator()(double rate) {
    rates.push_back(rate);
    StepResult s;
    s.rate_per_client = rate;
    s.offered_per_s = rate * 90;  // ten rooms of ten... any constant will do
    s.deliveries_per_s = (keeps_up_late ? rate : std::min(rate, capacity)) * 90;
    s.p99_us = rate <= capacity ? 500.0 : 250'000.0;
    s.sends = static_cast<std::uint64_t>(rate * 100);
    s.late_sends = std::count(late_at_steps.begin(), late_at_steps.end(), static_cast<int>(rates.size())) ? s.sends / 20 : 0;
    s.lost = rate > lose_above ? 3 : 0;
    s.loadgen_cpu_fraction = rate > loadgen_limit ? 0.95 : 0.3;
    s.server_cores = server_cores;
    s.server_died = static_cast<int>(rates.size()) == die_at_step;
    return s;
  }
};

CeilingResult search(Simulated& sim, double start, unsigned max_steps = 30) {
  CeilingOptions options;
  options.start_rate = start;
  options.max_steps = max_steps;
  return find_ceiling(options, [&](double rate) { return sim(rate); }, [] { return true; });
}

// The bracket closes monotonically: every rate measured lies strictly between the highest
// pass and the lowest failure seen before it.
void expect_monotone_bracket(const CeilingResult& r) {
  double passed = 0, failed = 1e300;
  for (std::size_t i = 0; i < r.steps.size(); ++i) {
    if (r.superseded[i]) continue;  // measured again at once: the next step decides
    const double rate = r.steps[i].rate_per_client;
    EXPECT_GT(rate, passed) << "step " << i;
    EXPECT_LT(rate, failed) << "step " << i;
    (r.verdicts[i].passed ? passed : failed) = rate;
  }
}

}  // namespace

TEST(CeilingSearch, RisesThenBisectsToTheServersCapacity) {
  Simulated sim;
  sim.capacity = 137;
  const auto r = search(sim, 10);
  expect_monotone_bracket(r);
  ASSERT_TRUE(r.ceiling && r.first_above);
  const double passed = r.steps[*r.ceiling].rate_per_client, failed = r.steps[*r.first_above].rate_per_client;
  EXPECT_LE(passed, 137);
  EXPECT_GT(failed, 137);
  EXPECT_LE(failed / passed, 1.05);
  EXPECT_EQ(r.verdicts[*r.first_above].limit, Limit::server);
  // 10, 20, 40, 80 pass and 160 fails (5 steps), then bisections from a ratio of 2 to 1.05: 4 more.
  EXPECT_EQ(r.steps.size(), 9u);
  const auto json = ceiling_json(r);
  EXPECT_EQ(json.at("limited_by").as_string(), "server");
  EXPECT_FALSE(json.at("lower_bound").as_bool());
  EXPECT_EQ(json.at("rate_per_client").as_double(), passed);
  EXPECT_EQ(json.at("steps").as_array().size(), r.steps.size());
  EXPECT_TRUE(json.at("steps").as_array()[*r.ceiling].as_object().at("passed").as_bool());
}

TEST(CeilingSearch, FallsWhenTheStartingRateFails) {
  Simulated sim;
  sim.capacity = 3;
  const auto r = search(sim, 100);
  expect_monotone_bracket(r);
  ASSERT_TRUE(r.ceiling && r.first_above);
  EXPECT_LE(r.steps[*r.ceiling].rate_per_client, 3);
  EXPECT_GT(r.steps[*r.first_above].rate_per_client, 3);
  EXPECT_FALSE(r.verdicts[0].passed);
}

TEST(CeilingSearch, LoadgenWithoutHeadroomMakesItALowerBound) {
  Simulated sim;
  sim.capacity = 500;
  sim.loadgen_limit = 100;  // loadgen gives out first: the server's ceiling is not found
  const auto r = search(sim, 10);
  ASSERT_TRUE(r.first_above);
  EXPECT_EQ(r.verdicts[*r.first_above].limit, Limit::loadgen);
  EXPECT_LE(r.steps[*r.ceiling].rate_per_client, 100);
  const auto json = ceiling_json(r);
  EXPECT_EQ(json.at("limited_by").as_string(), "loadgen");
  EXPECT_TRUE(json.at("lower_bound").as_bool());
}

TEST(CeilingSearch, ARateLateOnceIsMeasuredAgainAndTheSecondWindowDecides) {
  Simulated sim;
  sim.capacity = 137;
  sim.late_at_steps = {2, 4, 5};  // 20 late once (a hiccup); then 40 late twice running
  const auto r = search(sim, 10);
  expect_monotone_bracket(r);
  ASSERT_GE(sim.rates.size(), 6u);
  EXPECT_EQ(sim.rates[1], 20);
  EXPECT_EQ(sim.rates[2], 20);  // measured again at once
  EXPECT_TRUE(r.superseded[1] && r.verdicts[1].late_only && !r.verdicts[1].passed);
  EXPECT_TRUE(r.verdicts[2].passed);
  EXPECT_EQ(sim.rates[3], 40);
  EXPECT_EQ(sim.rates[4], 40);  // late twice running: that rate fails, for loadgen
  EXPECT_TRUE(r.superseded[3] && !r.superseded[4]);
  EXPECT_FALSE(r.verdicts[4].passed);
  EXPECT_EQ(r.verdicts[4].limit, Limit::loadgen);
  ASSERT_TRUE(r.ceiling);
  EXPECT_LT(r.steps[*r.ceiling].rate_per_client, 40);
  const auto json = ceiling_json(r);
  EXPECT_TRUE(json.at("steps").as_array()[1].as_object().at("superseded").as_bool());
  EXPECT_FALSE(json.at("steps").as_array()[2].as_object().at("superseded").as_bool());
  // A failure with any other cause is not measured again.
  Simulated slow;
  slow.capacity = 15;
  const auto s = search(slow, 10);
  for (std::size_t i = 1; i < slow.rates.size(); ++i) EXPECT_NE(slow.rates[i], slow.rates[i - 1]);
}

TEST(CeilingSearch, LossIsNamedApartFromTheServerBeingSlow) {
  Simulated sim;
  sim.lose_above = 50;
  const auto r = search(sim, 10);
  ASSERT_TRUE(r.first_above);
  EXPECT_EQ(r.verdicts[*r.first_above].limit, Limit::loss);
  EXPECT_EQ(ceiling_json(r).at("limited_by").as_string(), "loss");
}

TEST(CeilingSearch, StopsAtMaxStepsAndSaysItFoundNoCeiling) {
  Simulated sim;  // never fails
  const auto r = search(sim, 10, 6);
  EXPECT_EQ(r.steps.size(), 6u);
  EXPECT_FALSE(r.first_above);
  const auto json = ceiling_json(r);
  EXPECT_TRUE(json.at("limited_by").is_null());
  EXPECT_TRUE(json.at("lower_bound").as_bool());
  EXPECT_EQ(json.at("rate_per_client").as_double(), 320.0);
}

TEST(CeilingSearch, AServerThatDiesEndsTheSearch) {
  Simulated sim;
  sim.capacity = 137;
  sim.die_at_step = 3;
  const auto r = search(sim, 10);
  EXPECT_TRUE(r.server_died);
  EXPECT_EQ(r.steps.size(), 3u);
  EXPECT_EQ(r.verdicts.back().reason, "server died");
  EXPECT_TRUE(ceiling_json(r).at("server_died").as_bool());

  // Gone between steps: settle() says so and nothing more is measured.
  int settles = 0;
  const auto gone = find_ceiling(CeilingOptions{}, [&](double rate) { return Simulated{}(rate); }, [&] { return ++settles < 3; });
  EXPECT_TRUE(gone.server_died);
  EXPECT_EQ(gone.steps.size(), 2u);
}

TEST(PerServerCore, IsTheCeilingsDeliveriesOverTheCoresTheServerUsedThere) {
  for (const bool latency : {false, true}) {  // stopped by the server falling behind, or by its p99
    Simulated sim;
    sim.capacity = 137;
    sim.keeps_up_late = latency;
    const auto r = search(sim, 10);
    ASSERT_TRUE(r.ceiling && r.first_above);
    EXPECT_EQ(r.verdicts[*r.first_above].limit, latency ? Limit::latency : Limit::server);
    const auto figure = per_server_core(r);
    const StepResult& top = r.steps[*r.ceiling];
    ASSERT_TRUE(figure.deliveries_per_core_s) << figure.withheld;
    EXPECT_DOUBLE_EQ(*figure.deliveries_per_core_s, top.deliveries_per_s / 0.25);
    EXPECT_EQ(figure.withheld, "");
    const auto json = ceiling_json(r);
    EXPECT_EQ(json.at("deliveries_per_server_core_s").as_double(), std::round(top.deliveries_per_s * 4));
    EXPECT_TRUE(json.at("deliveries_per_server_core_s_withheld").is_null());
    EXPECT_EQ(json.at("server_cores").as_double(), 0.25);
  }
}

TEST(PerServerCore, IsWithheldFromASearchLoadgenStopped) {
  Simulated sim;
  sim.capacity = 500;
  sim.loadgen_limit = 100;
  const auto r = search(sim, 10);
  ASSERT_TRUE(r.ceiling && r.first_above);
  ASSERT_EQ(r.verdicts[*r.first_above].limit, Limit::loadgen);
  const auto figure = per_server_core(r);
  EXPECT_FALSE(figure.deliveries_per_core_s);
  EXPECT_NE(figure.withheld.find("loadgen"), std::string::npos) << figure.withheld;
  const auto json = ceiling_json(r);
  EXPECT_TRUE(json.at("deliveries_per_server_core_s").is_null());
  EXPECT_NE(std::string(json.at("deliveries_per_server_core_s_withheld").as_string()).find("loadgen"),
            std::string::npos);
}

TEST(PerServerCore, IsWithheldFromASearchLossStopped) {
  Simulated sim;
  sim.lose_above = 50;
  const auto r = search(sim, 10);
  ASSERT_TRUE(r.ceiling && r.first_above);
  ASSERT_EQ(r.verdicts[*r.first_above].limit, Limit::loss);
  const auto figure = per_server_core(r);
  EXPECT_FALSE(figure.deliveries_per_core_s);
  EXPECT_NE(figure.withheld.find("loss"), std::string::npos) << figure.withheld;
  EXPECT_TRUE(ceiling_json(r).at("deliveries_per_server_core_s").is_null());
}

TEST(PerServerCore, IsWithheldWithoutTheServersCpuOrAnUpperBracket) {
  Simulated blind;
  blind.capacity = 137;
  blind.server_cores.reset();  // no --server-pid
  auto figure = per_server_core(search(blind, 10));
  EXPECT_FALSE(figure.deliveries_per_core_s);
  EXPECT_NE(figure.withheld.find("--server-pid"), std::string::npos) << figure.withheld;

  Simulated endless;  // never fails: the server's limit was not reached
  figure = per_server_core(search(endless, 10, 6));
  EXPECT_FALSE(figure.deliveries_per_core_s);
  EXPECT_NE(figure.withheld.find("step budget"), std::string::npos) << figure.withheld;

  Simulated dies;
  dies.capacity = 137;
  dies.die_at_step = 3;
  figure = per_server_core(search(dies, 10));
  EXPECT_FALSE(figure.deliveries_per_core_s);
  EXPECT_NE(figure.withheld.find("died"), std::string::npos) << figure.withheld;
}

// A cgroup directory of either version, written by hand: what read_cgroup_cpu() reads.
struct FakeCgroup {
  std::string dir;
  FakeCgroup() {
    char path[] = "/tmp/ceiling-unit-cgroup-XXXXXX";
    dir = mkdtemp(path);
  }
  ~FakeCgroup() { std::filesystem::remove_all(dir); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(dir + "/" + name) << text; }
};

TEST(CgroupCpu, ReadsAVersion2QuotaAndThrottling) {
  FakeCgroup cgroup;
  EXPECT_FALSE(read_cgroup_cpu(cgroup.dir));  // no cpu.stat: not a cgroup of the CPU controller
  cgroup.write("cpu.stat", "usage_usec 900\nnr_periods 40\nnr_throttled 30\nthrottled_usec 250000\n");
  EXPECT_FALSE(read_cgroup_cpu(cgroup.dir));  // nor without a quota file
  cgroup.write("cpu.max", "3000 10000\n");
  const auto before = read_cgroup_cpu(cgroup.dir);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->periods, 40u);
  EXPECT_EQ(before->throttled_periods, 30u);
  EXPECT_EQ(before->throttled_ns, 250'000'000);
  ASSERT_TRUE(before->quota_cores);
  EXPECT_DOUBLE_EQ(*before->quota_cores, 0.3);
  EXPECT_EQ(before->period_us, 10000);
  cgroup.write("cpu.stat", "usage_usec 1900\nnr_periods 240\nnr_throttled 220\nthrottled_usec 1650000\n");
  const auto window = cgroup_throttling(*before, *read_cgroup_cpu(cgroup.dir));
  EXPECT_EQ(window.periods, 200u);
  EXPECT_EQ(window.throttled_periods, 190u);
  EXPECT_DOUBLE_EQ(window.throttled_s, 1.4);
  EXPECT_DOUBLE_EQ(*window.quota_cores, 0.3);
  cgroup.write("cpu.max", "max 100000\n");
  EXPECT_FALSE(read_cgroup_cpu(cgroup.dir)->quota_cores);  // no quota
}

TEST(CgroupCpu, ReadsAVersion1QuotaAndThrottling) {
  FakeCgroup cgroup;
  cgroup.write("cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 7000000\n");
  cgroup.write("cpu.cfs_period_us", "5000\n");
  cgroup.write("cpu.cfs_quota_us", "1000\n");
  const auto cpu = read_cgroup_cpu(cgroup.dir);
  ASSERT_TRUE(cpu);
  EXPECT_EQ(cpu->throttled_ns, 7'000'000);  // v1 counts in ns
  EXPECT_EQ(cpu->throttled_periods, 4u);
  EXPECT_DOUBLE_EQ(*cpu->quota_cores, 0.2);
  EXPECT_EQ(cpu->period_us, 5000);
  cgroup.write("cpu.cfs_quota_us", "-1\n");
  EXPECT_FALSE(read_cgroup_cpu(cgroup.dir)->quota_cores);
}

TEST(CeilingJudge, EveryCriterionFailsARate) {
  const CeilingCriteria criteria;
  StepResult good;
  good.offered_per_s = 1000;
  good.deliveries_per_s = 995;
  good.p99_us = 1000;
  good.sends = 1000;
  good.late_sends = 10;
  good.loadgen_cpu_fraction = 0.69;
  EXPECT_TRUE(judge(good, criteria).passed);

  auto fails = [&](auto change, Limit limit) {
    StepResult s = good;
    change(s);
    const Verdict v = judge(s, criteria);
    EXPECT_FALSE(v.passed);
    EXPECT_EQ(v.limit, limit) << v.reason;
    EXPECT_FALSE(v.reason.empty());
  };
  fails([](StepResult& s) { s.deliveries_per_s = 989; }, Limit::server);
  fails([](StepResult& s) { s.p99_us = 100'001; }, Limit::latency);
  // A server behind on deliveries has a long p99 too: the cause is named.
  fails([](StepResult& s) { s.p99_us = 100'001; s.deliveries_per_s = 989; }, Limit::server);
  fails([](StepResult& s) { s.p99_us = 100'001; s.outstanding = 1; }, Limit::server);
  // One send's deliveries either side of the window edge is the count's granularity, not a shortfall.
  StepResult coarse = good;
  coarse.granularity_per_s = 9;
  coarse.deliveries_per_s = 981;
  EXPECT_TRUE(judge(coarse, criteria).passed);
  fails([](StepResult& s) { s.granularity_per_s = 9; s.deliveries_per_s = 980; }, Limit::server);
  fails([](StepResult& s) { s.p99_us.reset(); }, Limit::server);
  fails([](StepResult& s) { s.outstanding = 1; }, Limit::server);
  fails([](StepResult& s) { s.lost = 1; }, Limit::loss);
  fails([](StepResult& s) { s.late_sends = 11; }, Limit::loadgen);
  // Sends late only while the machine kept loadgen off its core do not count against it...
  StepResult stalled = good;
  stalled.late_sends = 60;
  stalled.late_sends_stalled = 50;
  stalled.others_on_loadgen_cores = 0.05;
  EXPECT_TRUE(judge(stalled, criteria).passed) << judge(stalled, criteria).reason;
  fails([&](StepResult& s) { s = stalled; s.late_sends_stalled = 49; }, Limit::loadgen);
  // ...unless other work crowded loadgen's core: that work may be the test's own.
  fails([&](StepResult& s) { s = stalled; s.others_on_loadgen_cores = 0.06; }, Limit::loadgen);
  // ...or a CPU quota held loadgen back: then it was short of CPU.
  fails([&](StepResult& s) { s = stalled; s.loadgen_throttled_s = 0.01; }, Limit::loadgen);
  fails([](StepResult& s) { s.loadgen_cpu_fraction = 0.71; }, Limit::loadgen);
  // Loadgen out of headroom explains whatever else went wrong; loss outranks slowness.
  fails([](StepResult& s) { s.loadgen_cpu_fraction = 0.9; s.lost = 5; s.deliveries_per_s = 10; }, Limit::loadgen);
  fails([](StepResult& s) { s.lost = 5; s.deliveries_per_s = 10; }, Limit::loss);
}

TEST(CpuFraction, IsCpuSecondsOverTheWindowTimesTheAllowedCores) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const unsigned cores = static_cast<unsigned>(CPU_COUNT(&set));
  EXPECT_EQ(allowed_cpu_count(), cores);
  EXPECT_DOUBLE_EQ(loadgen_cpu_fraction(1.5, 2.0), 1.5 / (2.0 * cores));
  EXPECT_EQ(loadgen_cpu_fraction(1.0, 0.0), 0.0);
}

TEST(CoreBusy, IsTheWindowLessIdleAndStolenTime) {
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  const auto t = [&](double seconds) { return static_cast<std::uint64_t>(seconds * hz); };
  const std::vector<CoreTicks> before{{0, t(10), 0}, {1, t(10), t(1)}};
  // A 2 s window. Core 0: idle 0.6 s, so 70% busy. Core 1: never idle, 0.1 s stolen.
  const std::vector<CoreTicks> after{{0, t(10.6), 0}, {1, t(10), t(1.1)}, {2, t(1), 0}};
  const auto busy = core_busy(before, after, 2.0);
  ASSERT_EQ(busy.size(), 2u);  // core 2 came online during the window: no figure
  EXPECT_NEAR(busy[0].busy, 0.7, 1e-9);
  EXPECT_NEAR(busy[1].busy, 0.95, 1e-9);
  EXPECT_NEAR(busy[1].steal, 0.05, 1e-9);
  // A reading a tick off cannot make a core more than wholly busy or idle.
  const auto skewed = core_busy(before, {{0, t(12.1), 0}, {1, t(10), t(1)}}, 2.0);
  EXPECT_EQ(skewed[0].busy, 0.0);
  EXPECT_EQ(skewed[1].busy, 1.0);
}

// The per-core figure counts time spent busy, not the scheduler ticks that found the core
// busy: a thread that spins for part of every 250 µs, the grid loadgen's sends run on, is
// billed at its true share (tick sampling billed such a thread 0%).
TEST(CoreBusy, SeesWorkOnATimerGrid) {
  cpu_set_t one;
  CPU_ZERO(&one);
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  int cpu = 0;
  while (!CPU_ISSET(cpu, &allowed)) ++cpu;
  CPU_SET(cpu, &one);
  double thread_cpu_s = 0, window_s = 0;
  std::vector<CoreBusy> busy;
  std::thread spinner([&] {
    ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
    const auto before = read_core_ticks();
    const auto start = Clock::now();
    timespec cpu0{}, cpu1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    for (auto next = start; Clock::now() - start < std::chrono::seconds(2);) {
      next += std::chrono::microseconds(250);
      std::this_thread::sleep_until(next);
      while (Clock::now() - next < std::chrono::microseconds(60)) {}
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    window_s = std::chrono::duration<double>(Clock::now() - start).count();
    busy = core_busy(before, read_core_ticks(), window_s);
    thread_cpu_s = static_cast<double>(cpu1.tv_sec - cpu0.tv_sec) + static_cast<double>(cpu1.tv_nsec - cpu0.tv_nsec) / 1e9;
  });
  spinner.join();
  const auto core = std::find_if(busy.begin(), busy.end(), [&](const CoreBusy& c) { return c.cpu == cpu; });
  ASSERT_NE(core, busy.end());
  // The core was busy at least as long as this thread ran on it (less two readings' ticks).
  EXPECT_GE(core->busy * window_s, thread_cpu_s - 2.0 / static_cast<double>(sysconf(_SC_CLK_TCK)))
      << "the thread ran " << thread_cpu_s << " s of a " << window_s << " s window on CPU " << cpu;
}
