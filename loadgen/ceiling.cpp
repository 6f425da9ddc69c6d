#include "ceiling.hpp"

#include <cmath>
#include <sstream>

#include "report.hpp"

namespace loadgen {

namespace json = boost::json;

const char* limit_name(Limit limit) {
  switch (limit) {
    case Limit::none:
      return "none";
    case Limit::latency:
      return "latency";
    case Limit::server:
      return "server";
    case Limit::loss:
      return "loss";
    case Limit::loadgen:
      return "loadgen";
  }
  return "none";
}

Verdict judge(const StepResult& step, const CeilingCriteria& criteria) {
  Verdict verdict;
  if (step.server_died) {
    verdict.reason = "server died";
    return verdict;
  }
  std::ostringstream reason;
  int failures = 0;
  auto fail = [&](Limit limit, const std::string& what) {
    ++failures;
    if (!reason.str().empty()) reason << "; ";
    reason << what;
    // loadgen out of headroom explains everything else it saw; then loss, then the server
    // falling behind, which makes its latency grow too.
    if (static_cast<int>(limit) > static_cast<int>(verdict.limit)) verdict.limit = limit;
  };
  if (step.loadgen_cpu_fraction > criteria.max_loadgen_cpu_fraction) {
    std::ostringstream what;
    what.precision(3);
    what << "loadgen cpu fraction " << step.loadgen_cpu_fraction << " > " << criteria.max_loadgen_cpu_fraction;
    fail(Limit::loadgen, what.str());
  }
  const double late_allowed = criteria.max_late_fraction * static_cast<double>(step.sends);
  // Sends late only because the machine kept loadgen off its core say nothing of its headroom.
  const bool machine =
      step.others_on_loadgen_cores <= criteria.max_others_on_loadgen_cores && step.loadgen_throttled_s == 0;
  const std::uint64_t excused = machine ? step.late_sends_stalled : 0;
  const std::uint64_t late_busy = step.late_sends - std::min(step.late_sends, excused);
  const bool late = static_cast<double>(late_busy) > late_allowed;
  if (late)
    fail(Limit::loadgen,
         std::to_string(late_busy) + " of " + std::to_string(step.sends) + " sends late" +
             (excused > 0 ? " with loadgen on its core (" + std::to_string(excused) + " more while off it)" : ""));
  if (step.lost > 0) fail(Limit::loss, std::to_string(step.lost) + " lines lost");
  if (step.deliveries_per_s < criteria.min_delivered_fraction * step.offered_per_s - step.granularity_per_s) {
    std::ostringstream what;
    what.precision(3);
    what << "deliveries " << (step.offered_per_s > 0 ? 100 * step.deliveries_per_s / step.offered_per_s : 0)
         << "% of offered";
    fail(Limit::server, what.str());
  }
  if (!step.p99_us) {
    fail(Limit::server, "nothing delivered");
  } else if (*step.p99_us > criteria.p99_bar_us) {
    std::ostringstream what;
    what << "p99 " << std::llround(*step.p99_us) << " us > " << std::llround(criteria.p99_bar_us) << " us";
    fail(Limit::latency, what.str());
  }
  if (step.outstanding > 0)
    fail(Limit::server, std::to_string(step.outstanding) + " lines outstanding after the drain");
  verdict.reason = reason.str();
  verdict.passed = verdict.reason.empty();
  verdict.late_only = late && failures == 1;
  return verdict;
}

CeilingResult find_ceiling(const CeilingOptions& options, const std::function<StepResult(double rate)>& measure,
                           const std::function<bool()>& settle) {
  CeilingResult result;
  std::optional<double> passed, failed;  // the bracket: passed < ceiling < failed
  // One window at one rate, after the settle; false when the server is gone.
  auto window = [&](double rate) {
    if (!settle()) {
      result.server_died = true;
      return false;
    }
    result.steps.push_back(measure(rate));
    result.verdicts.push_back(judge(result.steps.back(), options.criteria));
    result.superseded.push_back(false);
    return true;
  };
  // Measures one rate; false when the search cannot go on (the server is gone).
  auto step = [&](double rate) {
    if (!window(rate)) return false;
    // Late sends alone, with loadgen's CPU under its bar: this VM now and then delays the
    // wake-up of an idle core by more than 1 ms (docs/loadgen.md), which can put a window
    // over the bar however light the load. Once more: a loadgen that cannot keep up fails
    // again, a hiccup does not come back on cue.
    if (result.verdicts.back().late_only && result.steps.size() < options.max_steps) {
      result.superseded.back() = true;
      if (!window(rate)) return false;
    }
    const std::size_t index = result.steps.size() - 1;
    if (result.steps.back().server_died) {
      result.server_died = true;
      return false;
    }
    // Every rate measured lies inside the current bracket, so each pass raises its floor
    // and each failure lowers its top: the last of each is the bracket.
    if (result.verdicts.back().passed) {
      passed = rate;
      result.ceiling = index;
    } else {
      failed = rate;
      result.first_above = index;
    }
    return true;
  };

  double rate = options.start_rate;
  while (result.steps.size() < options.max_steps && step(rate) && !(passed && failed))
    rate = passed ? rate * options.growth : rate / options.growth;
  while (!result.server_died && passed && failed && *failed / *passed > options.precision &&
         result.steps.size() < options.max_steps) {
    // The geometric middle, to 4 significant digits when that keeps it inside the bracket.
    // Dividing by (or multiplying with) an exact power of ten keeps the figure short in JSON.
    const double middle = std::sqrt(*passed * *failed);
    const double exponent = std::floor(std::log10(middle)) - 3;
    const double rounded = exponent < 0 ? std::round(middle * std::pow(10.0, -exponent)) / std::pow(10.0, -exponent)
                                        : std::round(middle / std::pow(10.0, exponent)) * std::pow(10.0, exponent);
    if (!step(rounded > *passed && rounded < *failed ? rounded : middle)) break;
  }
  return result;
}

PerCoreCapacity per_server_core(const CeilingResult& result) {
  if (result.server_died) return {std::nullopt, "the server died during the search"};
  if (!result.ceiling) return {std::nullopt, "no rate passed"};
  if (!result.first_above) return {std::nullopt, "no rate failed within the step budget: the server's limit is higher"};
  const Limit limit = result.verdicts[*result.first_above].limit;
  if (limit == Limit::loadgen) return {std::nullopt, "limited by loadgen: the search measured loadgen, not the server"};
  if (limit == Limit::loss) return {std::nullopt, "limited by loss: the server lost lines"};
  if (limit != Limit::server && limit != Limit::latency)
    return {std::nullopt, std::string("limited by ") + limit_name(limit)};
  const StepResult& top = result.steps[*result.ceiling];
  if (!top.server_cores) return {std::nullopt, "no server CPU figure (no --server-pid)"};
  if (*top.server_cores <= 0) return {std::nullopt, "the server used no CPU time at its ceiling"};
  return {top.deliveries_per_s / *top.server_cores, ""};
}

namespace {

double round4(double x) { return std::round(x * 1e4) / 1e4; }

json::value throttling_or_null(const std::optional<CgroupThrottling>& t) {
  return t ? json::value(throttling_json(*t)) : json::value(nullptr);
}

json::value fraction_json(const std::optional<double>& x) { return x ? json::value(round4(*x)) : json::value(nullptr); }

}  // namespace

json::object ceiling_json(const CeilingResult& result) {
  json::array steps;
  for (std::size_t i = 0; i < result.steps.size(); ++i) {
    const StepResult& s = result.steps[i];
    const Verdict& v = result.verdicts[i];
    steps.push_back(json::object{
        {"rate_per_client", s.rate_per_client},
        {"offered_per_s", std::round(s.offered_per_s)},
        {"deliveries_per_s", std::round(s.deliveries_per_s)},
        {"granularity_per_s", s.granularity_per_s},
        {"p99_us", s.p99_us ? json::value(*s.p99_us) : json::value(nullptr)},
        {"sends", s.sends},
        {"late_sends", s.late_sends},
        {"late_sends_stalled", s.late_sends_stalled},
        {"lost", s.lost},
        {"outstanding", s.outstanding},
        {"server_cpu_fraction", fraction_json(s.server_cpu_fraction)},
        {"loadgen_cpu_fraction", round4(s.loadgen_cpu_fraction)},
        {"others_on_loadgen_cores", round4(s.others_on_loadgen_cores)},
        {"loadgen_throttled_s", s.loadgen_throttled_s},
        {"server_cgroup", throttling_or_null(s.server_cgroup)},
        {"cores", cores_json(s.cores)},
        {"passed", v.passed},
        {"limit", v.passed || v.limit == Limit::none ? json::value(nullptr) : json::value(limit_name(v.limit))},
        {"reason", v.reason},
        {"superseded", result.superseded[i]}});
  }
  const StepResult* top = result.ceiling ? &result.steps[*result.ceiling] : nullptr;
  const std::optional<Limit> limit =
      result.first_above ? std::optional(result.verdicts[*result.first_above].limit) : std::nullopt;
  // Only a bracket whose failing side is the server's (or loss) gives the server's ceiling;
  // anything else is a floor under it.
  const bool lower_bound = !limit || *limit == Limit::loadgen;
  const PerCoreCapacity per_core = per_server_core(result);
  return json::object{
      {"deliveries_per_s", top ? json::value(std::round(top->deliveries_per_s)) : json::value(nullptr)},
      {"rate_per_client", top ? json::value(top->rate_per_client) : json::value(nullptr)},
      {"p99_us", top && top->p99_us ? json::value(*top->p99_us) : json::value(nullptr)},
      {"server_cpu_fraction", top ? fraction_json(top->server_cpu_fraction) : json::value(nullptr)},
      {"loadgen_cpu_fraction", top ? json::value(round4(top->loadgen_cpu_fraction)) : json::value(nullptr)},
      {"server_cores", top ? fraction_json(top->server_cores) : json::value(nullptr)},
      {"server_cgroup", top ? throttling_or_null(top->server_cgroup) : json::value(nullptr)},
      {"deliveries_per_server_core_s", per_core.deliveries_per_core_s
                                           ? json::value(std::round(*per_core.deliveries_per_core_s))
                                           : json::value(nullptr)},
      {"deliveries_per_server_core_s_withheld",
       per_core.withheld.empty() ? json::value(nullptr) : json::value(per_core.withheld)},
      {"limited_by", limit ? json::value(limit_name(*limit)) : json::value(nullptr)},
      {"lower_bound", lower_bound},
      {"first_failed_rate_per_client",
       limit ? json::value(result.steps[*result.first_above].rate_per_client) : json::value(nullptr)},
      {"server_died", result.server_died},
      {"steps", steps},
  };
}

}  // namespace loadgen
