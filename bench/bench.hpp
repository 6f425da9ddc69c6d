#pragma once
// What the micro-benchmark groups share: their sizes, the stack sizes they use, and a
// thread that can be given a stack size (std::thread cannot).

#include <pthread.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace microbench {

// The sizes the groups run at. The full run uses the sizes; --smoke shrinks
// them so that ctest can run every benchmark once in seconds.
struct Sizes {
  int idle_units = 10'000;                   // memory: units parked at once
  std::vector<int> fanout = {10, 1'000, 10'000};  // protocol: receivers of one message
  std::vector<int> sockets = {100, 1'000, 10'000};  // syscall: loopback connections
};

// Fiber stacks: the chat-fibers default (32 KiB, see docs/microbench.md) and Boost's own
// default, so the memory group shows what the stack size buys.
inline constexpr std::size_t fiber_stack = 32 * 1024;
// A small thread stack, the same size as a fiber's: the difference that remains between a
// thread and a fiber is then the kernel's share and the scheduler's, not the stack.
inline constexpr std::size_t small_thread_stack = 32 * 1024;

// A joinable POSIX thread with a chosen stack size (0: the system's default, which is
// what std::thread uses). Throws std::system_error if the thread cannot be created.
class StackThread {
 public:
  StackThread(std::size_t stack_size, std::function<void()> body);
  StackThread(StackThread&& other) noexcept;
  StackThread& operator=(StackThread&&) = delete;
  ~StackThread();  // joins
  void join();

 private:
  std::unique_ptr<std::function<void()>> body_;  // on the heap: its address outlives moves
  pthread_t handle_{};
  bool joinable_ = false;
};

// Each group registers its benchmarks at the sizes given.
void register_unit_benchmarks();
void register_switch_benchmarks();
void register_memory_benchmarks(const Sizes& sizes);
void register_protocol_benchmarks(const Sizes& sizes);
void register_syscall_benchmarks(const Sizes& sizes);

// Raises the soft descriptor limit to the hard one; returns the soft limit now in force.
long raise_descriptor_limit();

}  // namespace microbench
