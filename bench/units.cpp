// Group "units": create one unit of concurrency, let it run to its end, and join it.
// Time per iteration is the whole life of one unit that does nothing.

#include <memory>
#include <string>

#include <benchmark/benchmark.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/fiber/all.hpp>

#include "bench.hpp"

namespace microbench {
namespace {

namespace asio = boost::asio;

// stack_size 0: the system's default (8 MiB here), what std::thread uses.
void thread(benchmark::State& state, std::size_t stack_size) {
  for (auto _ : state) {
    StackThread thread(stack_size, [] {});
    thread.join();
  }
}

// A fiber on this thread, launched and joined by the main fiber. Its stack comes from
// Allocator and is freed with it: protected_fixedsize_stack (mmap + a guard page, as a
// thread's stack; what chat-fibers uses) or fixedsize_stack (malloc, no guard page), so
// the difference shows what the stack's system calls cost.
template <class Allocator>
void fiber(benchmark::State& state, std::size_t stack_size) {
  for (auto _ : state) {
    boost::fibers::fiber fiber(std::allocator_arg, Allocator(stack_size), [] {});
    fiber.join();
  }
}

// A handler posted to an io_context and run by it. The work guard keeps poll() from
// stopping the context between iterations.
void posted_handler(benchmark::State& state) {
  asio::io_context context;
  auto guard = asio::make_work_guard(context);
  int runs = 0;
  for (auto _ : state) {
    asio::post(context, [&runs] { ++runs; });
    context.poll();
  }
  if (runs != state.iterations()) state.SkipWithError("a posted handler did not run");
}

asio::awaitable<void> nothing() { co_return; }

// A coroutine started with co_spawn and awaited by its parent, the way a coroutine server
// spawns one per connection; the benchmark loop itself runs inside the parent.
void coroutine(benchmark::State& state) {
  asio::io_context context;
  asio::co_spawn(
      context,
      [&state]() -> asio::awaitable<void> {
        const auto executor = co_await asio::this_coro::executor;
        for (auto _ : state) co_await asio::co_spawn(executor, nothing(), asio::use_awaitable);
      },
      asio::detached);
  context.run();
}

}  // namespace

void register_unit_benchmarks() {
  const std::string small = std::to_string(small_thread_stack);
  benchmark::RegisterBenchmark("units/thread/stack:default", thread, 0)->UseRealTime();
  benchmark::RegisterBenchmark(("units/thread/stack:" + small).c_str(), thread,
                               small_thread_stack)
      ->UseRealTime();
  const std::string fiber_name = "units/fiber/stack:" + std::to_string(fiber_stack);
  benchmark::RegisterBenchmark((fiber_name + "/protected").c_str(),
                               fiber<boost::fibers::protected_fixedsize_stack>, fiber_stack)
      ->UseRealTime();
  benchmark::RegisterBenchmark((fiber_name + "/fixedsize").c_str(),
                               fiber<boost::fibers::fixedsize_stack>, fiber_stack)
      ->UseRealTime();
  benchmark::RegisterBenchmark("units/asio_post", posted_handler)->UseRealTime();
  benchmark::RegisterBenchmark("units/asio_co_spawn", coroutine)->UseRealTime();
}

}  // namespace microbench
