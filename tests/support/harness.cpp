#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

extern char** environ;

namespace chat::test {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// A descriptor closed when it goes out of scope, on every path.
struct Descriptor {
  int fd = -1;
  Descriptor() = default;
  explicit Descriptor(int fd) : fd(fd) {}
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

ServerCommand& server_command() {
  static ServerCommand command;
  return command;
}

bool parse_server_command(int& argc, char** argv) {
  ServerCommand& command = server_command();
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      for (int j = i + 1; j < argc; ++j) command.argv.emplace_back(argv[j]);
      break;
    }
    if (arg == "--variant" && i + 1 < argc) {
      command.variant = argv[++i];
      continue;
    }
    argv[kept++] = argv[i];
  }
  argc = kept;
  return !command.argv.empty();
}

int run_server_suite(int argc, char** argv) {
  const bool have_server = parse_server_command(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  if (!have_server && !testing::GTEST_FLAG(list_tests)) {
    std::fprintf(stderr, "usage: %s [gtest flags] --variant NAME -- SERVER_COMMAND...\n", argv[0]);
    return 2;
  }
  return RUN_ALL_TESTS();
}

// ---- ServerProcess -------------------------------------------------------------------

ServerProcess::ServerProcess(const Wrapper& wrapper, const std::vector<std::string>& extra) {
  std::vector<std::string> args = wrapper.argv;
  args.insert(args.end(), server_command().argv.begin(), server_command().argv.end());
  args.insert(args.end(), {"--port", "0"});
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // From here on every failure throws: the members' destructors then reap the child and
  // remove the file, and the Descriptors close themselves.
  char path[] = "/tmp/chatbench-stderr-XXXXXX";
  Descriptor err(::mkstemp(path));
  if (err.fd < 0) fail("mkstemp");
  stderr_file_.path = path;
  int pipe_ends[2];
  if (::pipe2(pipe_ends, O_CLOEXEC) != 0) fail("pipe");
  Descriptor out_read(pipe_ends[0]), out_write(pipe_ends[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_write.fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.fd, STDERR_FILENO);
  const int error = ::posix_spawnp(&child_.pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  out_write.close();  // else the read below would never see the server's EOF
  err.close();
  if (error != 0) {
    child_.pid = -1;
    errno = error;
    fail("spawn " + args[0]);
  }

  // The first line on stdout, within 5 s.
  const auto deadline = Clock::now() + 5s;
  std::string text;
  while (text.find('\n') == std::string::npos) {
    pollfd p{out_read.fd, POLLIN, 0};
    if (::poll(&p, 1, remaining_ms(deadline)) <= 0) break;
    char chunk[256];
    const ssize_t n = ::read(out_read.fd, chunk, sizeof chunk);
    if (n <= 0) break;
    text.append(chunk, static_cast<std::size_t>(n));
  }
  out_read.close();  // a server that writes more to stdout gets EPIPE: it must not
  listening_line_ = text.substr(0, text.find('\n'));
  static const std::regex pattern(R"(^listening on ([0-9.]+):([0-9]+) variant=([a-z]+(?:-[a-z]+)*)$)");
  std::smatch match;
  if (!std::regex_match(listening_line_, match, pattern)) {
    throw std::runtime_error("no 'listening on' line from the server; got: '" + text + "'; stderr: " +
                             stderr_text());
  }
  port_ = static_cast<std::uint16_t>(std::stoi(match[2]));
}

ServerProcess::~ServerProcess() = default;  // the members release the child and the file

ServerProcess::Child::~Child() {
  if (pid <= 0 || reaped) return;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

ServerProcess::TempFile::~TempFile() {
  if (!path.empty()) ::unlink(path.c_str());
}

void ServerProcess::signal(int signo) const { ::kill(child_.pid, signo); }

std::optional<int> ServerProcess::wait_exit(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(child_.pid, &status, WNOHANG) == child_.pid) {
      child_.reaped = true;
      return status;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    ::usleep(5000);
  }
}

std::string ServerProcess::stderr_text() const {
  std::ifstream in(stderr_file_.path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::size_t ServerProcess::rss_bytes() const {
  std::ifstream in("/proc/" + std::to_string(child_.pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6)) * 1024;
  }
  throw std::runtime_error("no VmRSS for the server");
}

double ServerProcess::cpu_seconds() const {
  std::ifstream in("/proc/" + std::to_string(child_.pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  // Fields after the command name, which is in parentheses and may hold spaces.
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::size_t ServerProcess::threads() const {
  std::ifstream in("/proc/" + std::to_string(child_.pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("Threads:")) return std::stoull(line.substr(8));
  }
  throw std::runtime_error("no Threads for the server");
}

// ---- Client --------------------------------------------------------------------------

Client::Client(std::uint16_t port, Options options) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) fail("socket");
  if (options.receive_buffer > 0) {
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &options.receive_buffer, sizeof options.receive_buffer);
  }
  const int on = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int saved = errno;
    ::close(fd_);
    errno = saved;
    fail("connect");
  }
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

Client::Client(Client&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)), start_(other.start_), eof_(other.eof_) {}

void Client::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("send");
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

bool Client::fill(Clock::time_point deadline) {
  if (eof_) return false;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, remaining_ms(deadline)) <= 0) return false;
  char chunk[65536];
  const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  if (start_ > 0) {  // drop what was read before appending, not once per line
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(chunk, static_cast<std::size_t>(n));
  return true;
}

std::optional<std::string> Client::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto lf = buffer_.find('\n', start_);
    if (lf != std::string::npos) {
      std::string line = buffer_.substr(start_, lf - start_);
      start_ = lf + 1;
      if (start_ == buffer_.size()) {
        buffer_.clear();
        start_ = 0;
      }
      return line;
    }
    if (!fill(deadline)) return std::nullopt;
  }
}

bool Client::closed_within(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!eof_) {
    buffer_.clear();
    start_ = 0;
    if (!fill(deadline) && !eof_) return false;
  }
  return true;
}

bool Client::silent_for(std::chrono::milliseconds window) {
  if (start_ < buffer_.size()) return false;
  return !fill(Clock::now() + window) && !eof_;
}

std::map<std::string, std::string> Client::stats(std::chrono::milliseconds timeout) {
  send_line("/stats");
  const auto line = read_line(timeout);
  if (!line || !line->starts_with("/stats ")) {
    throw std::runtime_error("no /stats reply; got: " + line.value_or("(nothing)"));
  }
  std::map<std::string, std::string> values;
  std::istringstream fields(line->substr(7));
  std::string field;
  while (fields >> field) {
    const auto eq = field.find('=');
    if (eq != std::string::npos) values[field.substr(0, eq)] = field.substr(eq + 1);
  }
  return values;
}

void Client::shutdown_write() { ::shutdown(fd_, SHUT_WR); }

void Client::reset() {
  const linger abort{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  ::close(fd_);
  fd_ = -1;
}

std::uint64_t stat_value(const std::map<std::string, std::string>& stats, const std::string& key) {
  const auto it = stats.find(key);
  if (it == stats.end()) throw std::runtime_error("/stats has no " + key);
  return std::stoull(it->second);
}

}  // namespace chat::test
