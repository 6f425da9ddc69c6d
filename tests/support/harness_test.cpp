// The harness itself: a server that never announces itself must leave nothing behind.
// ServerProcess's constructor throws then; the child it started must be killed and
// reaped all the same, or every such failure would leak a process into the test run.

#include <errno.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <system_error>

#include "harness.hpp"

namespace chat::test {
namespace {

// The "server" is `script` under sh. This binary starts no other process, so any child
// it still has (running or a zombie) was left by the harness.
void expect_start_fails_and_leaves_no_child(const std::string& script) {
  server_command() = {{"/bin/sh", "-c", script}, "none"};
  EXPECT_THROW(ServerProcess server, std::runtime_error);
  int status = 0;
  const pid_t left = ::waitpid(-1, &status, WNOHANG);
  EXPECT_EQ(left, -1) << (left == 0 ? std::string("a child is still running")
                                    : "child " + std::to_string(left) + " ended but was never reaped");
  EXPECT_EQ(errno, ECHILD);
}

TEST(ServerProcess, NoListeningLineInTimeLeavesNoChild) {
  expect_start_fails_and_leaves_no_child("exec sleep 60");  // the 5 s wait runs out
}

TEST(ServerProcess, WrongFirstLineLeavesNoChild) {
  expect_start_fails_and_leaves_no_child("echo starting; exec sleep 60");
}

TEST(ServerProcess, ExitWithoutListeningLineLeavesNoZombie) {
  expect_start_fails_and_leaves_no_child("echo cannot listen >&2; exit 1");
}

TEST(ServerProcess, CommandThatCannotBeStartedThrows) {
  server_command() = {{"/nonexistent/chat-server"}, "none"};
  EXPECT_THROW(ServerProcess server, std::system_error);
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
}

}  // namespace
}  // namespace chat::test
