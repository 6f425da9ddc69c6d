// The conformance suite: every rule of docs/protocol.md, checked against one
// server executable over real sockets. tests/conformance/CMakeLists.txt runs it once per
// variant; each test starts its own server on --port 0.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <utility>
#include <regex>
#include <string>
#include <vector>

#include "harness.hpp"

namespace chat::test {
namespace {

// Connects `n` clients and makes sure the server has admitted all of them (their
// sessions exist) before the test goes on: the last one's /stats round trip shows it.
std::vector<Client> connect_all(const ServerProcess& server, std::size_t n) {
  std::vector<Client> clients;
  for (std::size_t i = 0; i < n; ++i) clients.emplace_back(server.port());
  // Generous: a sanitized build on a loaded machine may take seconds for 200 connects
  // (chat-threads under ThreadSanitizer: over 5 s to answer the /stats behind them).
  EXPECT_TRUE(eventually([&] { return stat_value(clients.back().stats(15s), "clients") == n; }, 15s));
  return clients;
}

TEST(Conformance, AnnouncesListeningLine) {
  ServerProcess server;
  EXPECT_EQ(server.listening_line(),
            "listening on 127.0.0.1:" + std::to_string(server.port()) + " variant=" + server_command().variant);
}

TEST(Conformance, RelaysToEveryOtherClientWithoutEcho) {
  ServerProcess server;
  auto c = connect_all(server, 3);
  c[0].send_line("hello");
  EXPECT_EQ(c[1].read_line(), "hello");
  EXPECT_EQ(c[2].read_line(), "hello");
  // Replies and deliveries to one client keep their order, so an echo would come first.
  EXPECT_EQ(c[0].stats().at("variant"), server_command().variant);
  EXPECT_TRUE(c[0].silent_for(100ms));
}

TEST(Conformance, KeepsEachSendersOrder) {
  ServerProcess server;
  auto c = connect_all(server, 3);
  constexpr int kLines = 2000;
  std::string burst;
  for (int i = 0; i < kLines; ++i) {
    burst += "line " + std::to_string(i) + "\n";
    if (i % 300 == 299) {  // several writes of odd sizes, cut mid-line
      c[0].send(burst.substr(0, burst.size() - 3));
      burst.erase(0, burst.size() - 3);
    }
  }
  c[0].send(burst);
  for (int receiver = 1; receiver <= 2; ++receiver) {
    for (int i = 0; i < kLines; ++i) {
      ASSERT_EQ(c[receiver].read_line(), "line " + std::to_string(i)) << "receiver " << receiver;
    }
  }
}

// A line handled before its sender's next reply is queued for every receiver before
// anything a receiver does after seeing that reply, as on one thread: here the receiver
// ends its input, and its lingering close must still write the line. With --threads the
// two are on different threads (consecutive connections), so the hand-over has to reach
// the receiver's thread before the reply reaches the sender (chat/relay.hpp, catch_up).
// Timing decides whether a broken server shows it, so it is tried many times.
TEST(Conformance, LineBeforeAReplyReachesAReceiverThatThenEndsItsInput) {
  ServerProcess server;
  for (int round = 0; round < 100; ++round) {
    Client receiver(server.port());
    Client sender(server.port());
    const std::string room = "/join eof" + std::to_string(round);
    receiver.send_line(room);
    ASSERT_TRUE(receiver.read_line().has_value());
    sender.send_line(room);
    ASSERT_TRUE(sender.read_line().has_value());
    sender.send("line " + std::to_string(round) + "\n/stats\n");
    const auto reply = sender.read_line();
    ASSERT_TRUE(reply && reply->starts_with("/stats ")) << reply.value_or("(none)");
    receiver.shutdown_write();
    EXPECT_EQ(receiver.read_line(), "line " + std::to_string(round)) << "round " << round;
  }
}

// Eight senders at once into one room, each line to every other member, each sender's
// lines in its order. On a server with several threads the senders are on different ones
// (consecutive connections go to consecutive threads), so this is order across threads:
// a line that overtakes, or is lost or doubled in, a hand-over between threads fails.
TEST(Conformance, EightSendersKeepTheirOrderForEveryReceiver) {
  // Every receiver is read in turn, so the others wait meanwhile: no write timeout.
  ServerProcess server({"--write-timeout-ms", "600000"});
  constexpr std::size_t kSenders = 8;
  constexpr std::size_t kClients = kSenders + 2;  // and two that only receive
  constexpr int kLines = 2000;
  auto c = connect_all(server, kClients);
  // Interleaved: a chunk from each sender in turn, each chunk cut mid-line.
  std::vector<std::string> pending(kSenders);
  for (std::size_t s = 0; s < kSenders; ++s) {
    for (int k = 0; k < kLines; ++k) {
      pending[s].append("s").append(std::to_string(s)).append(" ").append(std::to_string(k)).append("\n");
    }
  }
  while (std::any_of(pending.begin(), pending.end(), [](auto& p) { return !p.empty(); })) {
    for (std::size_t s = 0; s < kSenders; ++s) {
      const std::size_t size = std::min<std::size_t>(pending[s].size(), 997);
      c[s].send(std::string_view(pending[s]).substr(0, size));
      pending[s].erase(0, size);
    }
  }
  for (std::size_t r = 0; r < kClients; ++r) {
    std::vector<int> next(kSenders, 0);
    const std::size_t expected = (r < kSenders ? kSenders - 1 : kSenders) * kLines;
    for (std::size_t got = 0; got < expected; ++got) {
      const auto line = c[r].read_line(10s);
      ASSERT_TRUE(line.has_value()) << "receiver " << r << " got only " << got << " of " << expected;
      const auto space = line->find(' ');
      ASSERT_TRUE(line->starts_with("s") && space != std::string::npos) << *line;
      const std::size_t from = std::stoul(line->substr(1, space - 1));
      ASSERT_LT(from, kSenders) << *line;
      ASSERT_NE(from, r) << "echo: " << *line;
      ASSERT_EQ(std::stoi(line->substr(space + 1)), next[from]) << "receiver " << r << ", sender " << from;
      ++next[from];
    }
    EXPECT_TRUE(c[r].silent_for(50ms)) << "receiver " << r << " got more than every line once";
  }
}

TEST(Conformance, DropsOnlyTheCrBeforeLf) {
  ServerProcess server;
  auto c = connect_all(server, 2);
  c[0].send("crlf\r\nmid\rdle\ntwo\r\r\n\r\n");
  EXPECT_EQ(c[1].read_line(), "crlf");
  EXPECT_EQ(c[1].read_line(), "mid\rdle");
  EXPECT_EQ(c[1].read_line(), "two\r");
  EXPECT_EQ(c[1].read_line(), "");
}

TEST(Conformance, RelaysEveryByteButLfUnchanged) {
  ServerProcess server;
  auto c = connect_all(server, 2);
  std::string all;
  for (int b = 0; b < 256; ++b) {
    if (b != '\n' && b != '/') all.push_back(static_cast<char>(b));  // '/' first would be a command
  }
  const std::string invalid_utf8 = "\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xff\xfe";
  c[0].send(all + "\n" + invalid_utf8 + "\n" + std::string(5, '\0') + "\n\n");
  EXPECT_EQ(c[1].read_line(), all);
  EXPECT_EQ(c[1].read_line(), invalid_utf8);
  EXPECT_EQ(c[1].read_line(), std::string(5, '\0'));
  EXPECT_EQ(c[1].read_line(), "");  // an empty line is a chat line too
}

TEST(Conformance, DoubleSlashLineIsChatRelayedVerbatim) {
  ServerProcess server;
  auto c = connect_all(server, 2);
  c[0].send_line("//join elsewhere");
  EXPECT_EQ(c[1].read_line(), "//join elsewhere");
  EXPECT_EQ(stat_value(c[0].stats(), "lines_in"), 1u);  // counted as chat, not a command
}

TEST(Conformance, RoomsIsolate) {
  ServerProcess server;
  auto c = connect_all(server, 4);
  c[0].send_line("/join blue");
  EXPECT_EQ(c[0].read_line(), "/joined blue");
  c[1].send_line("/join blue");
  EXPECT_EQ(c[1].read_line(), "/joined blue");
  c[0].send_line("to blue");
  EXPECT_EQ(c[1].read_line(), "to blue");
  c[2].send_line("to lobby");
  EXPECT_EQ(c[3].read_line(), "to lobby");
  // The lobby's line must not reach blue, nor blue's the lobby: the marker is next.
  c[3].send_line("marker");
  EXPECT_EQ(c[2].read_line(), "marker");
  c[1].send_line("blue marker");
  EXPECT_EQ(c[0].read_line(), "blue marker");
  EXPECT_EQ(stat_value(c[0].stats(), "rooms"), 2u);
  // Back to the lobby: blue is empty again after both leave, and is forgotten.
  c[0].send_line("/join lobby");
  EXPECT_EQ(c[0].read_line(), "/joined lobby");
  c[1].send_line("/join lobby");
  EXPECT_EQ(c[1].read_line(), "/joined lobby");
  c[2].send_line("all here");
  for (int i : {0, 1, 3}) EXPECT_EQ(c[i].read_line(), "all here");
  EXPECT_EQ(stat_value(c[0].stats(), "rooms"), 1u);
}

TEST(Conformance, RejectsBadRoomNames) {
  ServerProcess server;
  auto c = connect_all(server, 2);
  const std::string longest(64, 'x');
  const std::vector<std::string> bad_names = {"/join",     "/join ",           "/join two words",
                                              "/join a/b", "/join caf\xc3\xa9", "/join " + longest + "y"};
  for (const std::string& bad : bad_names) {
    c[0].send_line(bad);
    EXPECT_EQ(c[0].read_line(), "/error bad-room") << bad;
  }
  c[1].send_line("still lobby");  // c[0] never left
  EXPECT_EQ(c[0].read_line(), "still lobby");
  c[0].send_line("/join " + longest);
  EXPECT_EQ(c[0].read_line(), "/joined " + longest);
  c[0].send_line("/join A-Za-z0-9._");
  EXPECT_EQ(c[0].read_line(), "/joined A-Za-z0-9._");
}

TEST(Conformance, UnknownCommands) {
  ServerProcess server;
  Client c(server.port());
  for (const char* bad : {"/", "/JOIN x", "/joinx", "/statsx", "/nick me", "/ join"}) {
    c.send_line(bad);
    EXPECT_EQ(c.read_line(), "/error unknown-command") << bad;
  }
}

TEST(Conformance, StatsCountsWhatHappened) {
  ServerProcess server;
  auto c = connect_all(server, 3);
  const std::string sent = "one\ntwo\n";
  c[0].send(sent);
  for (int i : {1, 2}) {
    EXPECT_EQ(c[i].read_line(), "one");
    EXPECT_EQ(c[i].read_line(), "two");
  }
  std::map<std::string, std::string> stats;
  // lines_out counts completed writes, which may be booked just after the bytes arrive.
  EXPECT_TRUE(eventually([&] {
    stats = c[0].stats();
    return stat_value(stats, "lines_out") == 4;
  })) << "lines_out=" << stats["lines_out"];
  for (const char* key : {"variant", "clients", "rooms", "lines_in", "lines_out", "bytes_in", "bytes_out",
                          "slow_disconnects", "rejected", "lingering"}) {
    EXPECT_TRUE(stats.contains(key)) << key;
  }
  EXPECT_EQ(stats["variant"], server_command().variant);
  EXPECT_EQ(stat_value(stats, "clients"), 3u);
  EXPECT_EQ(stat_value(stats, "rooms"), 1u);
  EXPECT_EQ(stat_value(stats, "lines_in"), 2u);
  EXPECT_EQ(stat_value(stats, "slow_disconnects"), 0u);
  EXPECT_EQ(stat_value(stats, "rejected"), 0u);
  EXPECT_EQ(stat_value(stats, "lingering"), 0u);
  // Everything read, /stats lines included: connect_all sent one /stats, and c[0] sent
  // the two lines and as many /stats as the loop above took (each 7 bytes).
  const auto bytes_in = stat_value(stats, "bytes_in");
  EXPECT_GE(bytes_in, 7 + sent.size() + 7);
  EXPECT_EQ((bytes_in - sent.size()) % 7, 0u);
  // Written: 2 lines to 2 receivers, plus the /stats replies before this one.
  EXPECT_GE(stat_value(stats, "bytes_out"), 2 * sent.size());
}

TEST(Conformance, QuitClosesAfterQueuedOutput) {
  ServerProcess server;
  auto c = connect_all(server, 2);
  c[0].send("/join room\n/quit\nignored after quit\n");
  EXPECT_EQ(c[0].read_line(), "/joined room");
  EXPECT_TRUE(c[0].closed_within(2s));
  c[1].send_line("anyone?");
  EXPECT_TRUE(eventually([&] { return stat_value(c[1].stats(), "clients") == 1; }));
  EXPECT_EQ(stat_value(c[1].stats(), "lines_in"), 1u);  // the line after /quit was not taken
}

TEST(Conformance, LineTooLongClosesOnlyThatClient) {
  ServerProcess server({"--max-line", "100"});
  auto c = connect_all(server, 3);
  c[0].send_line(std::string(100, 'a'));  // exactly max-line: fine
  c[0].send(std::string(100, 'b') + "\r\n");  // the CR is not content
  for (int i : {1, 2}) {
    EXPECT_EQ(c[i].read_line(), std::string(100, 'a'));
    EXPECT_EQ(c[i].read_line(), std::string(100, 'b'));
  }
  c[0].send_line(std::string(101, 'c'));  // one byte over
  EXPECT_EQ(c[0].read_line(), "/error line-too-long");
  EXPECT_TRUE(c[0].closed_within(2s));
  // No LF at all: closed as soon as max-line is passed, not when a LF comes.
  c[2].send(std::string(150, 'd'));
  EXPECT_EQ(c[2].read_line(), "/error line-too-long");
  EXPECT_TRUE(c[2].closed_within(2s));
  Client late(server.port());
  late.send_line("still serving");
  EXPECT_EQ(c[1].read_line(), "still serving");
  EXPECT_FALSE(c[1].read_line(200ms).has_value());  // the long lines were never relayed
}

// A receiver that never reads, with a small receive buffer so the server's queue for it
// grows quickly. `flood` sends `lines` lines of `size` bytes from one client; `reader`
// reads them all.
struct SlowReaderScene {
  explicit SlowReaderScene(ServerProcess& s) : server(s) {
    // The watcher asks /stats from another room, so it does not receive the flood.
    watcher.send_line("/join watch");
    EXPECT_EQ(watcher.read_line(), "/joined watch");
  }

  ServerProcess& server;
  Client sender{server.port()};
  Client reader{server.port()};
  Client slow{server.port(), {.receive_buffer = 4096}};
  Client watcher{server.port()};

  // Sends in batches of 64 lines and lets the reader take each batch before the next,
  // so a reader that keeps up is never over --max-pending; only `slow` falls behind.
  void flood(int lines, std::size_t size, std::chrono::milliseconds* longest_gap) {
    const std::string payload(size, 'x');
    constexpr int kBatch = 64;
    auto last = Clock::now();
    std::chrono::milliseconds gap{0};
    for (int first = 0; first < lines; first += kBatch) {
      const int end = std::min(lines, first + kBatch);
      std::string batch;
      for (int i = first; i < end; ++i) batch += std::to_string(i) + ":" + payload + "\n";
      sender.send(batch);
      for (int i = first; i < end; ++i) {
        const auto line = reader.read_line(15s);
        ASSERT_TRUE(line.has_value()) << "reader lost line " << i;
        ASSERT_EQ(*line, std::to_string(i) + ":" + payload);
        const auto now = Clock::now();
        gap = std::max(gap, std::chrono::duration_cast<std::chrono::milliseconds>(now - last));
        last = now;
      }
    }
    if (longest_gap) *longest_gap = gap;
  }
};

TEST(Conformance, ReceiverOverMaxPendingIsDisconnected) {
  ServerProcess server({"--max-pending", "262144", "--write-timeout-ms", "60000"});
  SlowReaderScene scene(server);
  ASSERT_TRUE(eventually([&] { return stat_value(scene.watcher.stats(), "clients") == 4; }));
  const auto rss_before = server.rss_bytes();
  // 40 MB through the room; the slow receiver can hold a small part of it.
  scene.flood(40000, 1000, nullptr);
  EXPECT_TRUE(eventually([&] { return stat_value(scene.watcher.stats(), "slow_disconnects") == 1; }, 2s));
  EXPECT_TRUE(scene.slow.closed_within(2s));
  // Bounded memory: nowhere near the 40 MB that passed through.
  const auto growth = static_cast<long long>(server.rss_bytes()) - static_cast<long long>(rss_before);
  EXPECT_LT(growth, 16 << 20) << "server RSS grew by " << growth << " bytes";
}

TEST(Conformance, ReceiverThatTakesNothingTimesOut) {
  // Far more pending allowed than the flood needs: only the timeout can end it.
  ServerProcess server({"--max-pending", "268435456", "--write-timeout-ms", "1000"});
  SlowReaderScene scene(server);
  ASSERT_TRUE(eventually([&] { return stat_value(scene.watcher.stats(), "clients") == 4; }));
  std::chrono::milliseconds longest_gap{0};
  const auto start = Clock::now();
  scene.flood(8000, 1000, &longest_gap);  // 8 MB, more than the slow socket's buffers
  // Watched from outside: reading the slow socket would be progress.
  EXPECT_TRUE(eventually([&] { return stat_value(scene.watcher.stats(), "slow_disconnects") == 1; }, 5s));
  const auto took = Clock::now() - start;
  EXPECT_TRUE(scene.slow.closed_within(2s));
  // Delivery to the others may stall for the timeout at most (plus scheduling slack).
  EXPECT_LT(longest_gap, 2500ms) << "the reader waited this long for one line";
  EXPECT_LT(took, 8s);
}

TEST(Conformance, MaxClientsRefusesTheNext) {
  ServerProcess server({"--max-clients", "2"});
  auto c = connect_all(server, 2);
  Client third(server.port());
  EXPECT_EQ(third.read_line(), "/error server-full");
  EXPECT_TRUE(third.closed_within(2s));
  EXPECT_EQ(stat_value(c[0].stats(), "rejected"), 1u);
  c[1].send_line("/quit");
  EXPECT_TRUE(c[1].closed_within(2s));
  // A closing connection lingers, counted against --max-clients, until the client closes
  // too (or --linger-ms passes): docs/reliability.md.
  c[1].shutdown_write();
  EXPECT_TRUE(eventually([&] {
    const auto stats = c[0].stats();
    return stat_value(stats, "clients") == 1 && stat_value(stats, "lingering") == 0;
  }));
  Client fourth(server.port());  // a place is free again
  fourth.send_line("in");
  EXPECT_EQ(c[0].read_line(), "in");
}

TEST(Conformance, ResetMidLineCostsOnlyThatClient) {
  ServerProcess server;
  auto c = connect_all(server, 3);
  c[0].send("half a li");
  c[0].reset();
  EXPECT_TRUE(eventually([&] { return stat_value(c[1].stats(), "clients") == 2; }));
  c[1].send_line("after");
  EXPECT_EQ(c[2].read_line(), "after");
  EXPECT_EQ(stat_value(c[2].stats(), "lines_in"), 1u);  // the half line was dropped
}

TEST(Conformance, HalfClosedClientLeavesQuietly) {
  ServerProcess server;
  auto c = connect_all(server, 3);
  c[0].send_line("last words");
  c[0].shutdown_write();
  EXPECT_EQ(c[1].read_line(), "last words");
  EXPECT_EQ(c[2].read_line(), "last words");
  EXPECT_TRUE(c[0].closed_within(3s));
  c[1].send_line("still here");
  EXPECT_EQ(c[2].read_line(), "still here");
}

// A slow reader that half-closes still gets every line queued for it before its EOF was
// seen, then EOF: a FIN says the peer has nothing more to send, not that it cannot hear.
// The 8 MB backlog is more than the kernel holds for a reader with a small receive buffer
// (the server's send buffer grows to 4 MB, tcp_wmem), so much of it is still in the
// server's queue; the /stats poll waits until the server has seen the EOF before the
// reader starts reading.
TEST(Conformance, HalfClosedReaderGetsWhatWasQueued) {
  ServerProcess server({"--max-pending", "16777216", "--write-timeout-ms", "30000"});
  Client reader(server.port(), {.receive_buffer = 4096});
  Client sender(server.port());
  reader.send_line("/join backlog");
  ASSERT_EQ(reader.read_line(), "/joined backlog");
  sender.send_line("/join backlog");
  ASSERT_EQ(sender.read_line(), "/joined backlog");
  constexpr int kLines = 8000;
  std::string batch;
  for (int i = 0; i < kLines; ++i) {
    std::string line = "line " + std::to_string(i) + " ";
    line.resize(999, '.');
    batch += line + "\n";
  }
  sender.send(batch);
  EXPECT_EQ(stat_value(sender.stats(), "lines_in"), static_cast<std::uint64_t>(kLines));  // all queued
  reader.shutdown_write();
  EXPECT_TRUE(eventually([&] { return stat_value(sender.stats(), "clients") == 1; }, 10s))
      << "the server never saw the reader's EOF";
  for (int i = 0; i < kLines; ++i) {
    const auto line = reader.read_line();
    ASSERT_TRUE(line.has_value()) << "the connection ended after " << i << " of " << kLines << " lines";
    ASSERT_TRUE(line->starts_with("line " + std::to_string(i) + " ")) << *line;
  }
  EXPECT_TRUE(reader.closed_within(5s));
}

// Client `self` of `clients` reads one line `prefix` + i from every other client i: no
// echo, no duplicate, nothing else in between.
void expect_one_from_each_other(std::vector<Client>& clients, std::size_t self, const std::string& prefix,
                                std::chrono::milliseconds timeout) {
  std::vector<bool> seen(clients.size());
  for (std::size_t k = 0; k + 1 < clients.size(); ++k) {
    const auto line = clients[self].read_line(timeout);
    ASSERT_TRUE(line.has_value()) << "client " << self << " got only " << k << " lines";
    ASSERT_TRUE(line->starts_with(prefix)) << "client " << self << " got " << *line;
    const auto from = std::stoul(line->substr(prefix.size()));
    ASSERT_LT(from, clients.size());
    EXPECT_NE(from, self) << "echo";
    EXPECT_FALSE(seen[from]) << "duplicate";
    seen[from] = true;
  }
}

TEST(Conformance, TwoHundredClientsAtOnce) {
  ServerProcess server;
  constexpr std::size_t kClients = 200;
  auto c = connect_all(server, kClients);
  for (std::size_t i = 0; i < kClients; ++i) c[i].send_line("from " + std::to_string(i));
  for (std::size_t i = 0; i < kClients; ++i) ASSERT_NO_FATAL_FAILURE(expect_one_from_each_other(c, i, "from ", 10s));
}

// Many senders deliver to each receiver at the same moment, round after round, and every
// receiver must have the whole round before the next one starts. The last line of a
// round has no later line to carry it out, so a server that strands a queued line
// (chat-threads once did, when a writer let go of the receiver's lock between finding
// its queue empty and saying it had stopped writing) fails here instead of passing.
TEST(Conformance, EveryRoundArrivesWhole) {
  ServerProcess server;
  constexpr std::size_t kClients = 24;
  constexpr std::size_t kRounds = 250;
  auto c = connect_all(server, kClients);
  for (std::size_t round = 0; round < kRounds; ++round) {
    const std::string prefix = "round " + std::to_string(round) + " from ";
    for (std::size_t i = 0; i < kClients; ++i) c[i].send_line(prefix + std::to_string(i));
    for (std::size_t i = 0; i < kClients; ++i) {
      ASSERT_NO_FATAL_FAILURE(expect_one_from_each_other(c, i, prefix, 5s)) << "round " << round;
    }
  }
}

TEST(Conformance, SigtermStopsWithinTwoSecondsAndPrintsStats) {
  ServerProcess server;
  auto c = connect_all(server, 3);
  c[0].send_line("before the end");
  EXPECT_EQ(c[1].read_line(), "before the end");
  EXPECT_EQ(c[2].read_line(), "before the end");
  const auto start = Clock::now();
  server.signal(SIGTERM);
  const auto status = server.wait_exit(2s);
  ASSERT_TRUE(status.has_value()) << "still running 2 s after SIGTERM";
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_TRUE(WIFEXITED(*status)) << "killed by signal " << WTERMSIG(*status);
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  for (auto& client : c) EXPECT_TRUE(client.closed_within(1s));
  const std::string err = server.stderr_text();
  EXPECT_TRUE(std::regex_search(err, std::regex("/stats variant=" + server_command().variant +
                                                " .*lines_in=1 lines_out=2 ")))
      << err;
}

TEST(Conformance, SigintStopsToo) {
  ServerProcess server;
  Client c(server.port());
  server.signal(SIGINT);
  const auto status = server.wait_exit(2s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  EXPECT_TRUE(c.closed_within(1s));
}

}  // namespace
}  // namespace chat::test

int main(int argc, char** argv) { return chat::test::run_server_suite(argc, argv); }
