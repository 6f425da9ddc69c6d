#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "chat/hub.hpp"

namespace chat {
namespace {

struct FakeSession : Participant {
  explicit FakeSession(std::string n) : name(std::move(n)) {}
  std::string name;
  std::vector<Message> received;
};

using TestHub = Hub<FakeSession>;

struct HubTest : ::testing::Test {
  TestHub hub{"test"};
  FakeSession a{"a"}, b{"b"}, c{"c"};

  void SetUp() override {
    for (auto* s : {&a, &b, &c}) hub.enter(*s);
  }
  TestHub::Outcome say(FakeSession& from, std::string_view line) {
    return hub.handle(from, line, [](FakeSession& to, const Message& m) { to.received.push_back(m); });
  }
};

TEST_F(HubTest, ChatGoesToEveryOtherMemberAsOneSharedMessage) {
  const auto outcome = say(a, "hi");
  EXPECT_FALSE(outcome.reply);
  EXPECT_FALSE(outcome.quit);
  EXPECT_TRUE(a.received.empty());
  ASSERT_EQ(b.received.size(), 1u);
  ASSERT_EQ(c.received.size(), 1u);
  EXPECT_EQ(*b.received[0], "hi\n");
  EXPECT_EQ(b.received[0].get(), c.received[0].get());  // stored once
  EXPECT_EQ(hub.counters().lines_in, 1u);
}

TEST_F(HubTest, JoinMovesBetweenRoomsAndForgetsEmptyOnes) {
  EXPECT_EQ(*say(a, "/join blue").reply, "/joined blue\n");
  EXPECT_EQ(a.room()->name(), "blue");
  say(b, "lobby only");
  EXPECT_TRUE(a.received.empty());
  EXPECT_EQ(c.received.size(), 1u);
  say(a, "blue only");
  EXPECT_EQ(b.received.size(), 0u);
  EXPECT_EQ(hub.stats().find("rooms=2") != std::string::npos, true);
  say(a, "/join lobby");
  EXPECT_NE(hub.stats().find("rooms=1 "), std::string::npos);
}

TEST_F(HubTest, BadRoomKeepsTheSenderWhereItWas) {
  EXPECT_EQ(say(a, "/join no good").reply, replies::bad_room());
  EXPECT_EQ(say(a, "/join").reply, replies::bad_room());
  EXPECT_EQ(a.room()->name(), "lobby");
}

TEST_F(HubTest, RejoiningTheSameRoomIsHarmless) {
  say(a, "/join lobby");
  say(b, "x");
  EXPECT_EQ(a.received.size(), 1u);
  EXPECT_EQ(a.room()->members().size(), 3u);
}

TEST_F(HubTest, UnknownAndQuit) {
  EXPECT_EQ(say(a, "/nope").reply, replies::unknown_command());
  const auto quit = say(a, "/quit");
  EXPECT_TRUE(quit.quit);
  EXPECT_FALSE(quit.reply);
}

TEST_F(HubTest, StatsLineHasEveryKey) {
  say(a, "one");
  hub.counters().bytes_in += 5;
  const std::string line = *say(a, "/stats").reply;
  EXPECT_EQ(line,
            "/stats variant=test clients=3 rooms=1 lines_in=1 lines_out=0 bytes_in=5 bytes_out=0 "
            "slow_disconnects=0 rejected=0 lingering=0\n");
}

TEST_F(HubTest, ExitStopsDeliveryAndCountsDown) {
  hub.exit(b);
  say(a, "gone?");
  EXPECT_TRUE(b.received.empty());
  EXPECT_EQ(hub.counters().clients, 2u);
  hub.exit(b);  // twice is harmless
  EXPECT_EQ(hub.counters().clients, 2u);
  int seen = 0;
  hub.for_each_session([&](FakeSession&) { ++seen; });
  EXPECT_EQ(seen, 2);
}

TEST(Rooms, AThousandNamesLeaveNoTrace) {
  Rooms rooms;
  FakeSession s("s");
  for (int i = 0; i < 1000; ++i) rooms.join(s, "room" + std::to_string(i));
  EXPECT_EQ(rooms.count(), 1u);
  rooms.leave(s);
  EXPECT_EQ(rooms.count(), 0u);
  EXPECT_EQ(s.room(), nullptr);
}

TEST(Counters, WorkWithAtomics) {
  Counters<std::atomic<std::uint64_t>> c;
  ++c.lines_in;
  c.bytes_out += 10;
  EXPECT_NE(stats_line("x", c, 0).find("lines_in=1 lines_out=0 bytes_in=0 bytes_out=10"), std::string::npos);
}

}  // namespace
}  // namespace chat
