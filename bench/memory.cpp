// Group "memory": what one idle unit of concurrency costs, measured on 10 000 of them
// parked at once (a connection that waits for input is such a unit). One iteration: read
// memory, create the units and let each reach its wait, read memory again, release them.
// Counters are bytes per unit (the difference divided by the count).

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/context/stack_traits.hpp>
#include <boost/fiber/all.hpp>

#include "bench.hpp"

namespace microbench {
namespace {

namespace asio = boost::asio;

// The process's memory (/proc/self/statm) and the kernel's per-task memory, which is not
// in the process's RSS (/proc/meminfo: kernel stacks, page tables, unreclaimable slab,
// where task structures live). The /proc/meminfo figures are system-wide: whatever else
// the machine does meanwhile shows up in them, divided by the unit count.
struct MemorySample {
  double resident = 0;
  double virtual_size = 0;
  double kernel_stack = 0;
  double page_tables = 0;
  double slab_unreclaimable = 0;

  static MemorySample now() {
    MemorySample sample;
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    std::ifstream statm("/proc/self/statm");
    double pages_virtual = 0, pages_resident = 0;
    statm >> pages_virtual >> pages_resident;
    sample.virtual_size = pages_virtual * page;
    sample.resident = pages_resident * page;
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    double kib = 0;
    std::string unit;
    while (meminfo >> key >> kib) {
      if (key == "KernelStack:") sample.kernel_stack = kib * 1024;
      if (key == "PageTables:") sample.page_tables = kib * 1024;
      if (key == "SUnreclaim:") sample.slab_unreclaimable = kib * 1024;
      std::getline(meminfo, unit);
    }
    return sample;
  }
};

// Freed heap from earlier benchmarks would otherwise be reused without growing the RSS.
MemorySample clean_sample() {
  malloc_trim(0);
  return MemorySample::now();
}

void report(benchmark::State& state, const MemorySample& before, const MemorySample& after,
            int units) {
  const auto per_unit = [units](double bytes) {
    return benchmark::Counter(bytes / units, benchmark::Counter::kDefaults,
                              benchmark::Counter::kIs1024);
  };
  const double kernel = (after.kernel_stack - before.kernel_stack) +
                        (after.page_tables - before.page_tables) +
                        (after.slab_unreclaimable - before.slab_unreclaimable);
  state.counters["units"] = units;
  state.counters["rss_per_unit"] = per_unit(after.resident - before.resident);
  state.counters["vsz_per_unit"] = per_unit(after.virtual_size - before.virtual_size);
  state.counters["kernel_stack_per_unit"] = per_unit(after.kernel_stack - before.kernel_stack);
  state.counters["page_tables_per_unit"] = per_unit(after.page_tables - before.page_tables);
  state.counters["slab_per_unit"] =
      per_unit(after.slab_unreclaimable - before.slab_unreclaimable);
  state.counters["total_per_unit"] = per_unit(after.resident - before.resident + kernel);
}

// Threads blocked on a latch. stack_size 0: the system's default.
void threads(benchmark::State& state, std::size_t stack_size) {
  const int units = static_cast<int>(state.range(0));
  for (auto _ : state) {
    std::vector<StackThread> parked;
    parked.reserve(units);
    std::latch arrived(units);
    std::latch release(1);
    const MemorySample before = clean_sample();
    try {
      for (int i = 0; i < units; ++i) {
        parked.emplace_back(stack_size, [&] {
          arrived.count_down();
          release.wait();
        });
      }
      arrived.wait();
      report(state, before, MemorySample::now(), units);
    } catch (const std::system_error& error) {
      const std::string message =
          "thread " + std::to_string(parked.size()) + ": " + error.what();
      state.SkipWithError(message.c_str());
    }
    release.count_down();
    parked.clear();  // joins
  }
}

// Fibers on this thread waiting on a fiber condition variable, each on its own stack
// from the protected allocator (as chat-fibers allocates them).
void fibers(benchmark::State& state, std::size_t stack_size) {
  const int units = static_cast<int>(state.range(0));
  for (auto _ : state) {
    boost::fibers::mutex mutex;
    boost::fibers::condition_variable wake;
    bool released = false;
    int waiting = 0;
    std::vector<boost::fibers::fiber> parked;
    parked.reserve(units);
    const MemorySample before = clean_sample();
    for (int i = 0; i < units; ++i) {
      parked.emplace_back(std::allocator_arg, boost::fibers::protected_fixedsize_stack(stack_size),
                          [&] {
                            std::unique_lock lock(mutex);
                            ++waiting;
                            wake.wait(lock, [&] { return released; });
                          });
    }
    while (waiting < units) boost::this_fiber::yield();  // let each fiber reach its wait
    report(state, before, MemorySample::now(), units);
    {
      std::lock_guard lock(mutex);
      released = true;
    }
    wake.notify_all();
    for (auto& fiber : parked) fiber.join();
  }
}

asio::awaitable<void> wait_for(asio::steady_timer& timer, int& waiting) {
  ++waiting;
  co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
}

// Coroutines started with co_spawn, each suspended on one shared timer that never
// expires (a connection's coroutine would wait on its socket instead).
void coroutines(benchmark::State& state) {
  const int units = static_cast<int>(state.range(0));
  for (auto _ : state) {
    asio::io_context context;
    asio::steady_timer never(context, asio::steady_timer::time_point::max());
    int waiting = 0;
    const MemorySample before = clean_sample();
    for (int i = 0; i < units; ++i) {
      asio::co_spawn(context, wait_for(never, waiting), asio::detached);
    }
    context.poll();  // each coroutine runs up to its wait
    if (waiting != units) state.SkipWithError("not every coroutine reached its wait");
    report(state, before, MemorySample::now(), units);
    never.cancel();
    context.run();
  }
}

// Handlers posted to an io_context and not yet run: the callback model's idle cost is a
// pending operation (this one holds a pointer, as a handler bound to its session would).
void posted_handlers(benchmark::State& state) {
  const int units = static_cast<int>(state.range(0));
  for (auto _ : state) {
    asio::io_context context;
    int ran = 0;
    const MemorySample before = clean_sample();
    for (int i = 0; i < units; ++i) asio::post(context, [&ran] { ++ran; });
    report(state, before, MemorySample::now(), units);
    context.run();
    if (ran != units) state.SkipWithError("not every handler ran");
  }
}

}  // namespace

void register_memory_benchmarks(const Sizes& sizes) {
  const auto configure = [&](benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgName("units")->Arg(sizes.idle_units)->Iterations(1)->UseRealTime();
  };
  const auto bytes = [](std::size_t size) { return std::to_string(size); };
  configure(benchmark::RegisterBenchmark("memory/thread/stack:default", threads, 0));
  configure(benchmark::RegisterBenchmark(
      ("memory/thread/stack:" + bytes(small_thread_stack)).c_str(), threads,
      small_thread_stack));
  const std::size_t boost_default = boost::context::stack_traits::default_size();
  for (const std::size_t stack : {fiber_stack, boost_default}) {
    configure(benchmark::RegisterBenchmark(("memory/fiber/stack:" + bytes(stack)).c_str(),
                                           fibers, stack));
  }
  configure(benchmark::RegisterBenchmark("memory/asio_coroutine", coroutines));
  configure(benchmark::RegisterBenchmark("memory/asio_posted_handler", posted_handlers));
}

}  // namespace microbench
