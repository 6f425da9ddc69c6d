#pragma once
// Test harness: a server process started from its command line and plain blocking TCP
// clients with deadlines. Everything is real: real processes, real sockets on loopback.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace chat::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The server under test: the command after `--` on the test binary's command line
// (e.g. `-- build/bin/chat-threads` or `-- /usr/bin/python3 servers/eventlet/chat_server.py`),
// and the variant name it must announce (`--variant NAME`). Set once from main().
struct ServerCommand {
  std::vector<std::string> argv;
  std::string variant;
};
ServerCommand& server_command();
// Takes --variant NAME and `-- COMMAND...` out of argv; false if the command is missing.
bool parse_server_command(int& argc, char** argv);
// main() of a suite run against one server: parses the server command, then gtest's
// flags, and runs every test (or says how to call it).
int run_server_suite(int argc, char** argv);

// A command the server is started through, e.g. {"sh", "-c", "ulimit -n 256; exec \"$0\" \"$@\""}
// to start it under a limit; the server's own command line follows it.
struct Wrapper {
  std::vector<std::string> argv;
};

class ServerProcess {
 public:
  // Starts the server with --port 0 plus `extra` options and waits (5 s at most) for its
  // "listening on" line. Throws std::runtime_error if it does not come; whatever it
  // started is then killed and reaped, and its files removed, as by the destructor.
  explicit ServerProcess(const std::vector<std::string>& extra = {}) : ServerProcess(Wrapper{}, extra) {}
  // The same, started through `wrapper`.
  ServerProcess(const Wrapper& wrapper, const std::vector<std::string>& extra);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return child_.pid; }
  const std::string& listening_line() const { return listening_line_; }

  // Sends a signal; wait_exit() then returns the exit status (as waitpid's), or nullopt
  // if the process is still running after `timeout`.
  void signal(int signo) const;
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // Everything the server has written to stderr so far.
  std::string stderr_text() const;
  // VmRSS from /proc/PID/status, in bytes.
  std::size_t rss_bytes() const;
  // User + system CPU seconds from /proc/PID/stat.
  double cpu_seconds() const;
  // Threads from /proc/PID/status.
  std::size_t threads() const;

 private:
  // Each releases what it holds when destroyed, so that a constructor that throws
  // leaves nothing behind either: a member's destructor runs even then, ours does not.
  struct TempFile {
    std::string path;
    TempFile() = default;
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile();  // unlinks it
  };
  struct Child {
    pid_t pid = -1;
    bool reaped = false;
    Child() = default;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child();  // SIGKILL and waitpid, unless already reaped
  };

  TempFile stderr_file_;
  Child child_;  // after stderr_file_, so killed before the file goes
  std::uint16_t port_ = 0;
  std::string listening_line_;
};

class Client {
 public:
  struct Options {
    int receive_buffer = 0;  // SO_RCVBUF before connecting; 0 = the kernel's default
  };
  Client(std::uint16_t port, Options options);
  explicit Client(std::uint16_t port) : Client(port, Options{}) {}
  ~Client();
  Client(Client&& other) noexcept;
  Client& operator=(Client&&) = delete;

  void send(std::string_view bytes);  // all of it, or throws
  void send_line(std::string_view content) { send(std::string(content) + "\n"); }

  // The next line without its LF, or nullopt if none arrived in time or the
  // connection closed. An incomplete line stays buffered.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = 5s);
  // True if the server closed the connection (EOF or reset) within `timeout`; lines
  // that arrive before the close are discarded.
  bool closed_within(std::chrono::milliseconds timeout);
  // True if nothing at all arrives within `window`.
  bool silent_for(std::chrono::milliseconds window);

  // Round trip: sends /stats and returns its key=value pairs (with "variant"); throws if
  // no reply comes within `timeout`.
  std::map<std::string, std::string> stats(std::chrono::milliseconds timeout = 5s);

  void shutdown_write();
  // Closes with SO_LINGER 0: the peer gets a reset instead of a FIN.
  void reset();
  int fd() const { return fd_; }

 private:
  bool fill(Clock::time_point deadline);  // reads more; false on timeout or close
  int fd_ = -1;
  std::string buffer_;  // received; [start_, size) not yet returned
  std::size_t start_ = 0;
  bool eof_ = false;
};

// True under scripts/test.sh --sanitize. ASan keeps freed memory in quarantine and never
// returns its own bookkeeping, so an RSS verdict there would judge ASan, not the server.
inline bool sanitized() { return std::getenv("CHATBENCH_SANITIZED") != nullptr; }

// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout = 3s) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    struct timespec ts {0, 10'000'000};
    nanosleep(&ts, nullptr);
  }
}

std::uint64_t stat_value(const std::map<std::string, std::string>& stats, const std::string& key);

}  // namespace chat::test
