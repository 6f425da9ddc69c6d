#pragma once
// One receiver's queue of messages not yet written (protocol §Limits, --max-pending).

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "chat/message.hpp"

namespace chat {

// Holds shared messages, not copies, and counts the bytes still owed to the receiver.
// gather() lays the queue out as one scatter/gather list, so a variant writes everything
// queued with one writev / async_write however many messages piled up.
//
// Not thread safe: a variant that shares it between threads guards it.
class Outbox {
 public:
  enum class Kind : bool { reply, chat };  // only chat lines count as deliveries

  explicit Outbox(std::size_t max_pending) : max_pending_(max_pending) {}

  // Queues `message` unless that would take the bytes owed past max_pending. false
  // means the receiver is too slow: the caller disconnects it; nothing was queued.
  [[nodiscard]] bool push(Message message, Kind kind);

  bool empty() const noexcept { return head_ == queue_.size(); }
  std::size_t pending_bytes() const noexcept { return pending_bytes_; }

  // Fills `out` with views of the bytes owed, oldest first, starting at the first byte
  // not yet written. Returns how many views it filled (at most out.size()). The views
  // stay valid until consume() passes them, whatever is pushed meanwhile.
  std::size_t gather(std::span<std::string_view> out) const noexcept;

  // Records that `bytes` (<= pending_bytes()) were written. Returns how many chat lines
  // were thereby written completely, for lines_out.
  std::size_t consume(std::size_t bytes) noexcept;

  // Drops everything (the receiver is gone).
  void clear() noexcept;

 private:
  struct Entry {
    Message message;
    Kind kind;
  };

  std::size_t max_pending_;
  std::size_t pending_bytes_ = 0;
  // A vector used as a FIFO: [head_, size) is queued, and written_ bytes of
  // queue_[head_] are already out. Unlike std::deque it allocates nothing while empty,
  // which is what an idle connection is.
  std::vector<Entry> queue_;
  std::size_t head_ = 0;
  std::size_t written_ = 0;
};

}  // namespace chat
