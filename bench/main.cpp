// microbench: Google Benchmark's own main, plus the context that makes a result
// self-describing (git commit, compiler and flags, Boost version, the sizes in force) and
// the --smoke switch that ctest uses.

#include <sys/resource.h>

#include <chatbench/cli.hpp>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/version.hpp>

#include "bench.hpp"
#include "build_flags.hpp"
#include "git_commit.hpp"

namespace microbench {

long raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  if (limit.rlim_cur != limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return static_cast<long>(limit.rlim_cur);
}

}  // namespace microbench

int main(int argc, char** argv) {
  using namespace microbench;

  // --smoke is ours; take it out before Google Benchmark sees the arguments.
  bool smoke = false;
  std::vector<char*> arguments;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
    } else {
      if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
        // Google Benchmark prints its flags and exits 0; ours and the docs first.
        std::cout << "usage: microbench [--smoke] [Google Benchmark flags below]\n"
                     "  --smoke  small sizes, for a quick check\n"
                     "More in docs/microbench.md; exit statuses in docs/exit-status.md.\n";
      }
      arguments.push_back(argv[i]);
    }
  }
  int argument_count = static_cast<int>(arguments.size());
  benchmark::Initialize(&argument_count, arguments.data());
  // It names what it did not take, and so does a flag with a bad value.
  if (benchmark::ReportUnrecognizedArguments(argument_count, arguments.data())) {
    return chatbench::cli::exit_usage;
  }

  Sizes sizes;
  if (smoke) sizes = {.idle_units = 100, .fanout = {10, 100}, .sockets = {100}};

  // Two descriptors per loopback connection, and some to spare for the process itself:
  // the largest connection count that fits replaces any that does not (its name says
  // which count ran).
  const long descriptors = raise_descriptor_limit();
  const int most_sockets = static_cast<int>((descriptors - 200) / 2 / 1000 * 1000);
  for (int& count : sizes.sockets) {
    if (count > most_sockets) count = most_sockets;
  }

  benchmark::AddCustomContext("git_commit", MICROBENCH_GIT_COMMIT);
  benchmark::AddCustomContext("git_dirty", MICROBENCH_GIT_DIRTY);
  benchmark::AddCustomContext("compiler", MICROBENCH_CXX_COMPILER);
  benchmark::AddCustomContext("build_type", MICROBENCH_BUILD_TYPE);
  benchmark::AddCustomContext("cxx_flags", MICROBENCH_CXX_FLAGS);
  benchmark::AddCustomContext("boost_version", std::to_string(BOOST_VERSION / 100000) + "." +
                                                  std::to_string(BOOST_VERSION / 100 % 1000) +
                                                  "." + std::to_string(BOOST_VERSION % 100));
  benchmark::AddCustomContext("smoke", smoke ? "true" : "false");
  benchmark::AddCustomContext("fiber_stack_bytes", std::to_string(fiber_stack));
  benchmark::AddCustomContext("small_thread_stack_bytes", std::to_string(small_thread_stack));
  benchmark::AddCustomContext("idle_units", std::to_string(sizes.idle_units));
  benchmark::AddCustomContext("descriptor_limit", std::to_string(descriptors));

  register_unit_benchmarks();
  register_switch_benchmarks();
  register_memory_benchmarks(sizes);
  register_protocol_benchmarks(sizes);
  register_syscall_benchmarks(sizes);

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
