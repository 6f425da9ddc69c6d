#pragma once
// Accept back-off (protocol §Life cycle): out of descriptors or threads, a server waits
// 10 ms, then twice as long each time it fails again, up to 1 s, and starts over at 10 ms
// after an accept succeeds. It neither spins nor stops accepting for good.

#include <algorithm>
#include <cerrno>
#include <chrono>

namespace chat {

class Backoff {
 public:
  static constexpr std::chrono::milliseconds first{10};
  static constexpr std::chrono::milliseconds longest{1000};

  // The wait before the next try.
  std::chrono::milliseconds next() noexcept {
    const auto wait = delay_;
    delay_ = std::min(delay_ * 2, longest);
    return wait;
  }
  void reset() noexcept { delay_ = first; }

 private:
  std::chrono::milliseconds delay_ = first;
};

// accept() failed for want of a resource that may come back (descriptors, memory), not
// because of the peer: back off and try again.
inline bool is_resource_exhaustion(int error) noexcept {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

}  // namespace chat
