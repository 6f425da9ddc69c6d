#pragma once
// A counter that one thread writes and any thread may read: a server thread's /stats
// counters, which /stats adds up over every thread; a loadgen worker's tallies, which its
// main thread reads.

#include <atomic>
#include <cstdint>

namespace chatbench {

// A relaxed atomic whose update is a load and a store, not a locked read-modify-write: on
// x86 the same instructions as a plain integer, and no data race. Correct only while one
// thread (the owner) writes it.
class OwnedCount {
 public:
  OwnedCount() = default;
  OwnedCount& operator++() noexcept { return *this += 1; }
  OwnedCount& operator--() noexcept { return *this -= 1; }
  OwnedCount& operator+=(std::uint64_t n) noexcept { return *this = value() + n; }
  OwnedCount& operator-=(std::uint64_t n) noexcept { return *this = value() - n; }
  OwnedCount& operator=(std::uint64_t n) noexcept {
    value_.store(n, std::memory_order_relaxed);
    return *this;
  }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }
  operator std::uint64_t() const noexcept { return value(); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

}  // namespace chatbench
