#pragma once
// The lingering close (docs/reliability.md, "Lingering close"), after nginx's
// lingering_close / lingering_timeout. Closing a socket with unread input makes the kernel
// send a reset, which throws away whatever reply is still in the send buffer: the
// client's last lines, or the /error that says why it is dropped. So once a close is
// decided (a final reply, /quit, a refused client) a connection goes through:
//   draining:  write what is queued (under --write-timeout-ms) and read and discard
//              input meanwhile, so a client blocked writing its flood cannot deadlock
//              against a server waiting for it to read;
//   lingering: once that output is written or given up on, shutdown(SHUT_WR), then read
//              and discard until EOF, the deadline or --linger-bytes;
// then close. This class is that policy without I/O; each variant drives it.

#include <algorithm>
#include <chrono>
#include <cstddef>

#include "chat/options.hpp"

namespace chat {

class Linger {
 public:
  using Clock = std::chrono::steady_clock;
  // A client refused with /error server-full lingers at most this long: a flood of
  // refusals must not pin descriptors.
  static constexpr std::chrono::milliseconds refused_linger{100};

  explicit Linger(const ServerOptions& options, bool refused = false)
      : timeout_(refused ? std::min(options.linger, refused_linger) : options.linger),
        max_bytes_(options.linger_bytes) {}

  // The queued output is written, or the write timeout gave up on it: the caller shuts
  // its write side down now; the deadline starts.
  void drained(Clock::time_point now) {
    lingering_ = true;
    deadline_ = now + timeout_;
  }
  bool lingering() const noexcept { return lingering_; }
  // Meaningful once lingering().
  Clock::time_point deadline() const noexcept { return deadline_; }

  // Records `bytes` read and discarded. false: close now (the deadline passed, or more
  // than --linger-bytes came after the shutdown). Input while draining is not limited
  // here: the write timeout bounds that phase.
  bool discarded(std::size_t bytes, Clock::time_point now) {
    if (!lingering_) return true;
    bytes_ += bytes;
    return bytes_ < max_bytes_ && now < deadline_;
  }

 private:
  std::chrono::milliseconds timeout_;
  std::size_t max_bytes_;
  std::size_t bytes_ = 0;
  bool lingering_ = false;
  Clock::time_point deadline_{};
};

}  // namespace chat
