#include "chat/options.hpp"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <vector>

#include "chat/backoff.hpp"
#include "chat/linger.hpp"

namespace chat {
namespace {

ServerOptions parse(std::vector<std::string> args, std::size_t* stack = nullptr) {
  args.insert(args.begin(), "chat-test");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_server_options(static_cast<int>(argv.size()), argv.data(), "test", [&](CLI::App& app) {
    if (stack) add_stack_size_option(app, *stack, 16384, "test");
  });
}

TEST(Options, DefaultsAreTheProtocols) {
  const auto o = parse({});
  EXPECT_EQ(o.bind, "127.0.0.1");
  EXPECT_EQ(o.port, 3000);
  EXPECT_EQ(o.max_line, 4096u);
  EXPECT_EQ(o.max_pending, 1048576u);
  EXPECT_EQ(o.write_timeout, std::chrono::milliseconds(5000));
  EXPECT_EQ(o.max_clients, 0u);
}

TEST(Options, ParsesEveryOption) {
  std::size_t stack = 0;
  const auto o = parse({"--bind", "0.0.0.0", "--port", "0", "--max-line", "10", "--max-pending", "20",
                        "--write-timeout-ms", "30", "--max-clients", "40", "--stack-size", "64K"},
                       &stack);
  EXPECT_EQ(o.bind, "0.0.0.0");
  EXPECT_EQ(o.port, 0);
  EXPECT_EQ(o.max_line, 10u);
  EXPECT_EQ(o.max_pending, 20u);
  EXPECT_EQ(o.write_timeout, std::chrono::milliseconds(30));
  EXPECT_EQ(o.max_clients, 40u);
  EXPECT_EQ(stack, 65536u);
}

TEST(Options, StackSizeIsRoundedUpToWholePages) {
  std::size_t stack = 0;
  parse({"--stack-size", "20000"}, &stack);
  EXPECT_EQ(stack, 20480u);
  parse({"--stack-size", "1M"}, &stack);
  EXPECT_EQ(stack, 1048576u);
}

// A bad command line is a usage error: exit status 2, one line naming the option and
// what it accepts.
TEST(OptionsDeathTest, BadValuesAreUsageErrors) {
  const auto usage_error = ::testing::ExitedWithCode(2);
  EXPECT_EXIT(parse({"--max-line", "0"}), usage_error, "--max-line: '0' is not an integer from 1 to");
  EXPECT_EXIT(parse({"--port", "70000"}), usage_error, "--port: '70000' is not an integer from 0 to 65535");
  EXPECT_EXIT(parse({"--write-timeout-ms", "-1"}), usage_error, "write-timeout-ms");
  EXPECT_EXIT(parse({"--bind", "localhost"}), usage_error, "--bind: 'localhost' is not an IPv4 or IPv6 address");
  EXPECT_EXIT(parse({"--frobnicate"}), usage_error, "unknown option or argument: --frobnicate");
  std::size_t stack = 0;
  EXPECT_EXIT(parse({"--stack-size", "8K"}, &stack), usage_error, "--stack-size: '8K' is below the minimum of 16K");
  EXPECT_EXIT(parse({"--stack-size", "8X"}, &stack), usage_error, "--stack-size: '8X' is not a size from 16K to 1G");
}

// The lingering close (chat/linger.hpp): its options and the policy's deadline and limit.
TEST(Linger, OptionsDeadlineAndByteLimit) {
  EXPECT_EQ(parse({}).linger, std::chrono::milliseconds(1000));
  EXPECT_EQ(parse({}).linger_bytes, 4194304u);
  const auto o = parse({"--linger-ms", "500", "--linger-bytes", "10"});
  EXPECT_EQ(o.linger, std::chrono::milliseconds(500));
  EXPECT_EQ(o.linger_bytes, 10u);
  const auto t0 = Linger::Clock::now();
  Linger closing(o);
  EXPECT_TRUE(closing.discarded(1000, t0));  // draining: the write timeout bounds it
  closing.drained(t0);
  EXPECT_EQ(closing.deadline(), t0 + std::chrono::milliseconds(500));
  EXPECT_TRUE(closing.discarded(9, t0));
  EXPECT_FALSE(closing.discarded(1, t0));  // --linger-bytes reached
  Linger refused(o, true);
  refused.drained(t0);
  EXPECT_EQ(refused.deadline(), t0 + Linger::refused_linger);
  EXPECT_FALSE(refused.discarded(1, t0 + Linger::refused_linger));
}

TEST(Backoff, DoublesFromTenMillisecondsToOneSecondAndResets) {
  Backoff b;
  std::vector<long> waits;
  for (int i = 0; i < 9; ++i) waits.push_back(static_cast<long>(b.next().count()));
  EXPECT_EQ(waits, (std::vector<long>{10, 20, 40, 80, 160, 320, 640, 1000, 1000}));
  b.reset();
  EXPECT_EQ(b.next().count(), 10);
  EXPECT_TRUE(is_resource_exhaustion(EMFILE));
  EXPECT_TRUE(is_resource_exhaustion(ENFILE));
  EXPECT_FALSE(is_resource_exhaustion(ECONNABORTED));
}

}  // namespace
}  // namespace chat
