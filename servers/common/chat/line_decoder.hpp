#pragma once
// Framing (protocol §Lines): turns a byte stream into lines, enforcing --max-line.

#include <cstddef>
#include <string>
#include <string_view>

namespace chat {

// Feed it whatever a read returned; it calls back once per complete line with the line's
// content (without the LF and without a CR just before it).
//
// A line that lies whole inside one chunk is handed out as a view into that chunk; only an
// unfinished tail is copied, and never more than max_line + 1 bytes of it (the extra byte
// is a CR that may still turn out to precede an LF). So a connection costs max_line + 1
// bytes here at worst, and nothing while it sends whole lines.
class LineDecoder {
 public:
  enum class Status {
    ok,             // every complete line was handed out; the rest is buffered
    stopped,        // the callback asked to stop; the rest of the chunk was dropped
    line_too_long,  // content over max_line: the connection must be closed
  };

  explicit LineDecoder(std::size_t max_line) : max_line_(max_line) {}

  // on_line(std::string_view content) -> bool: false stops the decoder (e.g. after /quit).
  // The view is valid only during the call. Once line_too_long is returned, every later
  // call returns it too.
  template <class OnLine>
  Status feed(std::string_view chunk, OnLine&& on_line);

  std::size_t buffered_bytes() const noexcept { return partial_.size(); }
  std::size_t max_line() const noexcept { return max_line_; }

 private:
  // An unfinished line may be max_line bytes, or max_line + 1 if its last byte is a CR.
  bool may_still_fit(std::size_t size, char last) const noexcept {
    return size <= max_line_ || (size == max_line_ + 1 && last == '\r');
  }
  void release_partial() noexcept;

  std::size_t max_line_;
  std::string partial_;  // the unfinished line, if any
  bool failed_ = false;
};

template <class OnLine>
LineDecoder::Status LineDecoder::feed(std::string_view chunk, OnLine&& on_line) {
  if (failed_) return Status::line_too_long;
  while (!chunk.empty()) {
    const auto lf = chunk.find('\n');
    if (lf == std::string_view::npos) {
      if (!may_still_fit(partial_.size() + chunk.size(), chunk.back())) {
        failed_ = true;
        release_partial();
        return Status::line_too_long;
      }
      partial_.append(chunk);
      return Status::ok;
    }
    std::string_view line = chunk.substr(0, lf);
    chunk.remove_prefix(lf + 1);
    const std::size_t size = partial_.size() + line.size();
    const bool has_cr = !line.empty() ? line.back() == '\r' : partial_.ends_with('\r');
    if (size - (has_cr ? 1 : 0) > max_line_) {
      failed_ = true;
      release_partial();
      return Status::line_too_long;
    }
    if (!partial_.empty()) {
      partial_.append(line);
      line = partial_;
    }
    if (has_cr) line.remove_suffix(1);
    const bool keep_going = on_line(line);
    release_partial();
    if (!keep_going) return Status::stopped;
  }
  return Status::ok;
}

}  // namespace chat
