#include "chat/line_decoder.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace chat {
namespace {

using Status = LineDecoder::Status;

struct Fed {
  std::vector<std::string> lines;
  Status status = Status::ok;
};

// Feeds `input` in chunks of `chunk` bytes (0: all at once) and collects the lines.
Fed feed(LineDecoder& decoder, std::string_view input, std::size_t chunk = 0) {
  Fed fed;
  if (chunk == 0) chunk = input.size() ? input.size() : 1;
  for (std::size_t at = 0; at < input.size() && fed.status == Status::ok; at += chunk) {
    fed.status = decoder.feed(input.substr(at, chunk), [&](std::string_view line) {
      fed.lines.emplace_back(line);
      return true;
    });
  }
  return fed;
}

TEST(LineDecoder, SplitsLinesInOneChunk) {
  LineDecoder d(100);
  const auto fed = feed(d, "one\ntwo\nthree\n");
  EXPECT_EQ(fed.lines, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ(fed.status, Status::ok);
  EXPECT_EQ(d.buffered_bytes(), 0u);
}

TEST(LineDecoder, SameLinesWhateverTheChunking) {
  const std::string input = "alpha\r\nbeta\n\ngamma\rdelta\n" + std::string(90, 'z') + "\r\nlast\n";
  const std::vector<std::string> expected = {"alpha", "beta", "", "gamma\rdelta", std::string(90, 'z'), "last"};
  for (std::size_t chunk : {1, 2, 3, 7, 64, 1000}) {
    LineDecoder d(100);
    const auto fed = feed(d, input, chunk);
    EXPECT_EQ(fed.lines, expected) << "chunk " << chunk;
    EXPECT_EQ(fed.status, Status::ok);
  }
}

TEST(LineDecoder, KeepsAnUnfinishedTailForTheNextChunk) {
  LineDecoder d(100);
  auto fed = feed(d, "complete\npart");
  EXPECT_EQ(fed.lines, std::vector<std::string>{"complete"});
  EXPECT_EQ(d.buffered_bytes(), 4u);
  fed = feed(d, "ial\n");
  EXPECT_EQ(fed.lines, std::vector<std::string>{"partial"});
  EXPECT_EQ(d.buffered_bytes(), 0u);
}

TEST(LineDecoder, DropsOnlyTheCrJustBeforeLf) {
  LineDecoder d(100);
  const auto fed = feed(d, "a\r\n\r\nb\r\r\n\rc\n", 1);
  EXPECT_EQ(fed.lines, (std::vector<std::string>{"a", "", "b\r", "\rc"}));
}

TEST(LineDecoder, PassesNulAndInvalidUtf8) {
  LineDecoder d(100);
  const std::string weird("\0\xff\xfe\xc3\x28\x80", 6);
  const auto fed = feed(d, weird + "\n", 1);
  ASSERT_EQ(fed.lines.size(), 1u);
  EXPECT_EQ(fed.lines[0], weird);
}

TEST(LineDecoder, ExactlyMaxLineIsAccepted) {
  for (std::size_t chunk : {0, 1, 5}) {
    LineDecoder d(10);
    const auto fed = feed(d, std::string(10, 'x') + "\n" + std::string(10, 'y') + "\r\n", chunk);
    EXPECT_EQ(fed.status, Status::ok) << chunk;
    EXPECT_EQ(fed.lines, (std::vector<std::string>{std::string(10, 'x'), std::string(10, 'y')}));
  }
}

TEST(LineDecoder, OneByteOverIsRejected) {
  for (std::size_t chunk : {0, 1, 5}) {
    LineDecoder d(10);
    const auto fed = feed(d, "ok\n" + std::string(11, 'x') + "\nnever\n", chunk);
    EXPECT_EQ(fed.status, Status::line_too_long) << chunk;
    EXPECT_EQ(fed.lines, std::vector<std::string>{"ok"});  // lines before it still count
  }
}

TEST(LineDecoder, RejectsAsSoonAsTheTailIsTooLongWithoutWaitingForLf) {
  LineDecoder d(10);
  EXPECT_EQ(feed(d, std::string(10, 'x')).status, Status::ok);  // could still end here
  EXPECT_EQ(feed(d, "\r").status, Status::ok);                   // could be CRLF
  EXPECT_EQ(feed(d, "x").status, Status::line_too_long);
  EXPECT_EQ(d.buffered_bytes(), 0u);
  // And stays failed.
  EXPECT_EQ(feed(d, "\n").status, Status::line_too_long);
}

TEST(LineDecoder, NeverBuffersMoreThanMaxLinePlusOne) {
  LineDecoder d(64);
  std::size_t most = 0;
  Status status = Status::ok;
  for (int i = 0; i < 1000 && status == Status::ok; ++i) {
    status = d.feed("abc", [](std::string_view) { return true; });
    most = std::max(most, d.buffered_bytes());
  }
  EXPECT_EQ(status, Status::line_too_long);
  EXPECT_LE(most, 65u);
}

TEST(LineDecoder, ALongLineInOneChunkIsRejectedWithoutCopying) {
  LineDecoder d(10);
  const auto fed = feed(d, std::string(1000, 'x') + "\n");
  EXPECT_EQ(fed.status, Status::line_too_long);
  EXPECT_EQ(d.buffered_bytes(), 0u);
}

TEST(LineDecoder, CallbackCanStop) {
  LineDecoder d(100);
  std::vector<std::string> lines;
  const auto status = d.feed("a\nstop\nb\n", [&](std::string_view line) {
    lines.emplace_back(line);
    return line != "stop";
  });
  EXPECT_EQ(status, Status::stopped);
  EXPECT_EQ(lines, (std::vector<std::string>{"a", "stop"}));
}

TEST(LineDecoder, LineSplitAcrossManyReads) {
  LineDecoder d(4096);
  const std::string line(4096, 'q');
  std::vector<std::string> lines;
  for (std::size_t at = 0; at < line.size(); at += 100) {
    ASSERT_EQ(d.feed(std::string_view(line).substr(at, 100), [&](std::string_view l) {
      lines.emplace_back(l);
      return true;
    }), Status::ok);
  }
  EXPECT_TRUE(lines.empty());
  d.feed("\n", [&](std::string_view l) {
    lines.emplace_back(l);
    return true;
  });
  EXPECT_EQ(lines, std::vector<std::string>{line});
}

}  // namespace
}  // namespace chat
