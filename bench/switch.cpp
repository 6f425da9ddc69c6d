// Group "switch": two units hand control back and forth; time per iteration is one round
// trip (A wakes B, B wakes A), i.e. two switches.

#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>

#include <benchmark/benchmark.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/context/fiber.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>
#include <boost/fiber/all.hpp>

#include "bench.hpp"

namespace microbench {
namespace {

namespace asio = boost::asio;

// Pins the calling thread to one CPU (the first it may run on) for as long as it lives,
// then gives it back the CPUs it had. With both threads on one CPU every wake-up is a
// real context switch; unpinned, the two threads may sit on two cores and the round trip
// is a cross-core wake-up instead. The thread ping-pongs run both ways.
class PinnedToOneCpu {
 public:
  explicit PinnedToOneCpu(bool pin) : pinned_(pin) {
    if (!pinned_) return;
    sched_getaffinity(0, sizeof saved_, &saved_);
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &saved_)) ++cpu;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    sched_setaffinity(0, sizeof one, &one);
  }
  ~PinnedToOneCpu() {
    if (pinned_) sched_setaffinity(0, sizeof saved_, &saved_);
  }
  PinnedToOneCpu(const PinnedToOneCpu&) = delete;
  PinnedToOneCpu& operator=(const PinnedToOneCpu&) = delete;

 private:
  bool pinned_;
  cpu_set_t saved_{};
};

// range(0): 1 = both threads on one CPU.
void threads_condition_variable(benchmark::State& state) {
  const bool same_cpu = state.range(0) != 0;
  PinnedToOneCpu pin(same_cpu);
  std::mutex mutex;
  std::condition_variable wake;
  bool partners_turn = false;
  bool stop = false;
  StackThread partner(0, [&] {
    PinnedToOneCpu partner_pin(same_cpu);
    std::unique_lock lock(mutex);
    for (;;) {
      wake.wait(lock, [&] { return partners_turn || stop; });
      if (stop) return;
      partners_turn = false;
      wake.notify_one();
    }
  });
  for (auto _ : state) {
    std::unique_lock lock(mutex);
    partners_turn = true;
    wake.notify_one();
    wake.wait(lock, [&] { return !partners_turn; });
  }
  {
    std::lock_guard lock(mutex);
    stop = true;
  }
  wake.notify_one();
}

// The same through the kernel alone: two eventfds, blocking read and write.
void threads_eventfd(benchmark::State& state) {
  const bool same_cpu = state.range(0) != 0;
  PinnedToOneCpu pin(same_cpu);
  const int to_partner = eventfd(0, EFD_CLOEXEC);
  const int to_main = eventfd(0, EFD_CLOEXEC);
  if (to_partner < 0 || to_main < 0) {
    state.SkipWithError("eventfd failed");
    return;
  }
  // A value of 2 asks the partner to stop.
  StackThread partner(0, [&] {
    PinnedToOneCpu partner_pin(same_cpu);
    std::uint64_t value = 0;
    while (read(to_partner, &value, sizeof value) == sizeof value && value == 1) {
      if (write(to_main, &value, sizeof value) != sizeof value) break;
    }
  });
  for (auto _ : state) {
    std::uint64_t value = 1;
    const bool ok = write(to_partner, &value, sizeof value) == sizeof value &&
         read(to_main, &value, sizeof value) == sizeof value;
    if (!ok) {
      state.SkipWithError("eventfd read or write failed");
      break;
    }
  }
  const std::uint64_t stop = 2;
  if (write(to_partner, &stop, sizeof stop) != sizeof stop) std::abort();  // would hang
  partner.join();
  close(to_partner);
  close(to_main);
}

// Two fibers on this thread: the main fiber and a partner, waking each other through a
// fiber condition variable, as two chat-fibers sessions would.
void fibers_condition_variable(benchmark::State& state) {
  boost::fibers::mutex mutex;
  boost::fibers::condition_variable wake;
  bool partners_turn = false;
  bool stop = false;
  boost::fibers::fiber partner(
      std::allocator_arg, boost::fibers::protected_fixedsize_stack(fiber_stack), [&] {
        std::unique_lock lock(mutex);
        for (;;) {
          wake.wait(lock, [&] { return partners_turn || stop; });
          if (stop) return;
          partners_turn = false;
          wake.notify_one();
        }
      });
  for (auto _ : state) {
    std::unique_lock lock(mutex);
    partners_turn = true;
    wake.notify_one();
    wake.wait(lock, [&] { return !partners_turn; });
  }
  {
    std::lock_guard lock(mutex);
    stop = true;
  }
  wake.notify_one();
  partner.join();
}

// The bare stack switch Boost.Fiber is built on (Boost.Context), without a scheduler.
void context_switch(benchmark::State& state) {
  namespace context = boost::context;
  context::fiber partner(std::allocator_arg, context::protected_fixedsize_stack(fiber_stack),
                         [](context::fiber&& main) {
                           for (;;) main = std::move(main).resume();
                           return std::move(main);
                         });
  for (auto _ : state) partner = std::move(partner).resume();
  // Destroying the suspended partner unwinds its stack.
}

// Two handlers on one io_context, each posting the other: the callback model's switch.
void asio_handlers(benchmark::State& state) {
  asio::io_context context;
  struct PingPong {
    asio::io_context& context;
    benchmark::State& state;
    void ping() {
      if (state.KeepRunning()) asio::post(context, [this] { pong(); });
    }
    void pong() {
      asio::post(context, [this] { ping(); });
    }
  } ping_pong{context, state};
  asio::post(context, [&] { ping_pong.ping(); });
  context.run();
}

// Two coroutines on one io_context handing a token through two unbuffered channels; the
// benchmark loop runs inside one of them.
void asio_coroutines(benchmark::State& state) {
  using Channel = asio::experimental::channel<void(boost::system::error_code)>;
  asio::io_context context;
  Channel to_partner(context);
  Channel to_main(context);
  const auto token = asio::as_tuple(asio::use_awaitable);
  asio::co_spawn(
      context,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [received] = co_await to_partner.async_receive(token);
          if (received) co_return;  // closed: the benchmark is over
          auto [sent] = co_await to_main.async_send({}, token);
          if (sent) co_return;
        }
      },
      asio::detached);
  asio::co_spawn(
      context,
      [&]() -> asio::awaitable<void> {
        for (auto _ : state) {
          auto [sent] = co_await to_partner.async_send({}, token);
          auto [received] = co_await to_main.async_receive(token);
          if (sent || received) {
            state.SkipWithError("channel failed");
            break;
          }
        }
        to_partner.close();
      },
      asio::detached);
  context.run();
}

}  // namespace

void register_switch_benchmarks() {
  benchmark::RegisterBenchmark("switch/threads_condition_variable",
                               threads_condition_variable)
      ->ArgName("same_cpu")
      ->Arg(0)
      ->Arg(1)
      ->UseRealTime();
  benchmark::RegisterBenchmark("switch/threads_eventfd", threads_eventfd)
      ->ArgName("same_cpu")
      ->Arg(0)
      ->Arg(1)
      ->UseRealTime();
  benchmark::RegisterBenchmark("switch/fibers_condition_variable", fibers_condition_variable)
      ->UseRealTime();
  benchmark::RegisterBenchmark("switch/boost_context", context_switch)->UseRealTime();
  benchmark::RegisterBenchmark("switch/asio_handlers", asio_handlers)->UseRealTime();
  benchmark::RegisterBenchmark("switch/asio_coroutines", asio_coroutines)->UseRealTime();
}

}  // namespace microbench
