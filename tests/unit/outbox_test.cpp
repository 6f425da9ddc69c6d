#include "chat/outbox.hpp"

#include <gtest/gtest.h>

#include <array>
#include <string>

namespace chat {
namespace {

using Kind = Outbox::Kind;

std::string gathered(const Outbox& box, std::size_t max_views = 64) {
  std::array<std::string_view, 64> views;
  const auto n = box.gather(std::span(views).first(max_views));
  std::string all;
  for (std::size_t i = 0; i < n; ++i) all += views[i];
  return all;
}

TEST(Outbox, GathersEverythingQueuedInOrder) {
  Outbox box(1000);
  ASSERT_TRUE(box.push(make_message("one"), Kind::chat));
  ASSERT_TRUE(box.push(make_message("two"), Kind::reply));
  ASSERT_TRUE(box.push(make_message("three"), Kind::chat));
  EXPECT_EQ(box.pending_bytes(), 14u);
  EXPECT_EQ(gathered(box), "one\ntwo\nthree\n");
}

TEST(Outbox, GatherIsBoundedByTheSpan) {
  Outbox box(1000);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(box.push(make_message(std::to_string(i)), Kind::chat));
  EXPECT_EQ(gathered(box, 2), "0\n1\n");
}

TEST(Outbox, PartialWritesResumeMidMessage) {
  Outbox box(1000);
  ASSERT_TRUE(box.push(make_message("hello"), Kind::chat));
  ASSERT_TRUE(box.push(make_message("world"), Kind::chat));
  EXPECT_EQ(box.consume(3), 0u);
  EXPECT_EQ(gathered(box), "lo\nworld\n");
  EXPECT_EQ(box.consume(4), 1u);  // "lo\n" finishes the first, "w" starts the second
  EXPECT_EQ(gathered(box), "orld\n");
  EXPECT_EQ(box.pending_bytes(), 5u);
  EXPECT_EQ(box.consume(5), 1u);
  EXPECT_TRUE(box.empty());
  EXPECT_EQ(box.pending_bytes(), 0u);
}

TEST(Outbox, OnlyChatLinesCountAsDeliveries) {
  Outbox box(1000);
  ASSERT_TRUE(box.push(make_message("/joined x"), Kind::reply));
  ASSERT_TRUE(box.push(make_message("chat"), Kind::chat));
  EXPECT_EQ(box.consume(box.pending_bytes()), 1u);
}

TEST(Outbox, RefusesWhatWouldPassMaxPending) {
  Outbox box(10);
  ASSERT_TRUE(box.push(make_message("12345678"), Kind::chat));  // 9 bytes
  EXPECT_FALSE(box.push(make_message("ab"), Kind::chat));       // 12 > 10
  EXPECT_EQ(box.pending_bytes(), 9u);
  EXPECT_TRUE(box.push(make_message(""), Kind::chat));  // exactly 10
  box.consume(10);
  EXPECT_TRUE(box.push(make_message("12345678"), Kind::chat));  // room again once written
}

TEST(Outbox, SharesMessagesInsteadOfCopying) {
  const Message m = make_message("shared");
  Outbox a(100), b(100);
  ASSERT_TRUE(a.push(m, Kind::chat));
  ASSERT_TRUE(b.push(m, Kind::chat));
  EXPECT_EQ(m.use_count(), 3);
  std::array<std::string_view, 1> view;
  a.gather(view);
  EXPECT_EQ(view[0].data(), m->data());  // the very same bytes
  a.consume(a.pending_bytes());
  EXPECT_EQ(m.use_count(), 2);  // released as soon as written
  b.clear();
  EXPECT_EQ(m.use_count(), 1);
}

TEST(Outbox, ViewsSurviveLaterPushes) {
  Outbox box(1 << 20);
  ASSERT_TRUE(box.push(make_message("first"), Kind::chat));
  std::array<std::string_view, 1> view;
  box.gather(view);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(box.push(make_message("more"), Kind::chat));
  EXPECT_EQ(view[0], "first\n");
}

TEST(Outbox, LongQueueDrainedInPieces) {
  Outbox box(1 << 20);
  for (int i = 0; i < 500; ++i) ASSERT_TRUE(box.push(make_message(std::to_string(i)), Kind::chat));
  std::size_t lines = 0;
  int expected = 0;
  while (!box.empty()) {
    std::array<std::string_view, 7> views;
    const auto n = box.gather(views);
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_EQ(views[i], std::to_string(expected++) + "\n");
      bytes += views[i].size();
    }
    lines += box.consume(bytes);
  }
  EXPECT_EQ(lines, 500u);
}

}  // namespace
}  // namespace chat
