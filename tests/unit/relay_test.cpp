// Back-pressure between the threads of a --threads N server (chat/relay.hpp): two threads'
// relays, each with its own io_context, one of which is not run, as a thread kept off
// its core would be.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <string>

#include "chat/relay.hpp"

namespace {

struct Member : chat::Participant {};
using Relay = chat::net::Relay<Member>;

// Runs every handler that is ready, and those they post, as one thread's loop would; an
// io_context with no work left stops, so restart it first.
void run_ready(boost::asio::io_context& io) {
  do io.restart();
  while (io.poll() != 0);
}

// Two threads' relays, hubs and io_contexts; one member in the lobby on each.
struct TwoThreads {
  chat::net::Cluster<Member> cluster{2};
  boost::asio::io_context io0{1}, io1{1};
  Relay::Hub hub0{"test"}, hub1{"test"};
  std::size_t delivered = 0;  // lines relayed to thread 1's member
  Relay relay0{cluster, 0, io0, hub0, [](Member&, const chat::Message&) {}};
  Relay relay1{cluster, 1, io1, hub1, [this](Member&, const chat::Message&) { ++delivered; }};
  Member sender, receiver;

  TwoThreads() {
    hub0.enter(sender);
    hub1.enter(receiver);
  }
  ~TwoThreads() {  // out of their rooms while the relays are still there
    hub0.exit(sender);
    hub1.exit(receiver);
  }

  // What one read of thread 0's sender hands to the hub, then the rest of thread 0's
  // round (the batch goes out).
  void send(std::size_t lines) {
    const std::string line(100, 'x');
    for (std::size_t i = 0; i < lines; ++i) {
      hub0.handle(sender, line, [](Member&, const chat::Message&) {});
    }
    run_ready(io0);
  }
};

constexpr std::size_t kLinesPerRead = 50;

// Thread 1 never runs: thread 0 stops reading once its credit to thread 1 is spent, so
// what waits for thread 1 stays within the credit and one read, whatever the sender sends.
TEST(RelayCredit, SourceStopsReadingWhileItsDestinationDoesNotRun) {
  TwoThreads threads;
  std::size_t sent = 0;
  while (threads.relay0.may_read() && sent < 1'000'000) {
    threads.send(kLinesPerRead);
    sent += kLinesPerRead;
  }
  ASSERT_FALSE(threads.relay0.may_read()) << sent << " lines sent, all on their way to thread 1";
  EXPECT_GT(threads.relay0.in_flight(1), Relay::kCredit);
  EXPECT_LE(threads.relay0.in_flight(1), Relay::kCredit + kLinesPerRead * (100 + 1 + 64));
  EXPECT_EQ(threads.delivered, 0u);

  bool woken = false;
  threads.relay0.wait_for_credit([&](auto) { woken = true; });
  run_ready(threads.io0);
  EXPECT_FALSE(woken) << "woken while nothing was delivered";

  // Thread 1 runs: it delivers every line, releases the credit, and wakes thread 0.
  run_ready(threads.io1);
  EXPECT_EQ(threads.delivered, sent);
  EXPECT_EQ(threads.relay0.in_flight(1), 0u);
  run_ready(threads.io0);
  EXPECT_TRUE(woken);
  EXPECT_TRUE(threads.relay0.may_read());
}

// The destination releases credit between the source's check and its wait: the wake-up
// still comes (or may_read() already says yes), never lost.
TEST(RelayCredit, CreditReleasedBeforeTheWaitStillWakes) {
  TwoThreads threads;
  while (threads.relay0.may_read()) threads.send(kLinesPerRead);
  run_ready(threads.io1);  // all delivered after may_read() said no: the wake-up is posted
  bool woken = false;
  threads.relay0.wait_for_credit([&](auto) { woken = true; });
  run_ready(threads.io0);
  EXPECT_TRUE(woken);
  EXPECT_TRUE(threads.relay0.may_read());
}

}  // namespace
