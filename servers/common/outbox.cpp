#include "chat/outbox.hpp"

#include <algorithm>
#include <cassert>

namespace chat {

bool Outbox::push(Message message, Kind kind) {
  const std::size_t size = message->size();
  if (size > max_pending_ - std::min(pending_bytes_, max_pending_)) return false;
  queue_.push_back({std::move(message), kind});
  pending_bytes_ += size;
  return true;
}

std::size_t Outbox::gather(std::span<std::string_view> out) const noexcept {
  std::size_t filled = 0;
  for (std::size_t i = head_; i < queue_.size() && filled < out.size(); ++i) {
    std::string_view bytes = *queue_[i].message;
    if (i == head_) bytes.remove_prefix(written_);
    out[filled++] = bytes;
  }
  return filled;
}

std::size_t Outbox::consume(std::size_t bytes) noexcept {
  assert(bytes <= pending_bytes_);
  pending_bytes_ -= bytes;
  std::size_t chat_lines = 0;
  while (bytes > 0) {
    Entry& front = queue_[head_];
    const std::size_t left = front.message->size() - written_;
    if (bytes < left) {
      written_ += bytes;
      break;
    }
    bytes -= left;
    written_ = 0;
    if (front.kind == Kind::chat) ++chat_lines;
    front.message.reset();  // free the message now, not when the slot is reused
    ++head_;
  }
  if (empty()) {
    // Start over at the front; keep a small queue's slots for the next burst, but give
    // a big one back: a connection that once fell behind should not pay for it idle.
    constexpr std::size_t kRetainedSlots = 64;
    if (queue_.capacity() > kRetainedSlots) {
      std::vector<Entry>().swap(queue_);
    } else {
      queue_.clear();
    }
    head_ = 0;
  } else if (head_ >= 64 && head_ * 2 >= queue_.size()) {
    // A receiver that never drains completely: slide the live part to the front now
    // and then, so the written slots are not kept for ever.
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
  return chat_lines;
}

void Outbox::clear() noexcept {
  queue_.clear();
  queue_.shrink_to_fit();
  head_ = 0;
  written_ = 0;
  pending_bytes_ = 0;
}

}  // namespace chat
