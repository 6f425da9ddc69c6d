// Group "syscall": the machine's ceiling for delivering short lines to many sockets, the
// limit every variant's deliveries per second are compared with. One thread writes a
// line (or a gathered batch of lines) to each of N loopback TCP connections in turn; a
// reader thread drains the other ends with epoll, as clients would.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench.hpp"

namespace microbench {
namespace {

std::system_error system_error(const char* what) {
  return std::system_error(errno, std::generic_category(), what);
}

// Loopback connections, made once and shared by every benchmark of the group (making
// 9 000 of them takes longer than measuring them). The accepted end is the writer, as a
// server's socket is; the connecting end is the reader's.
class LoopbackConnections {
 public:
  LoopbackConnections() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        listen(listener_, SOMAXCONN) != 0 ||
        getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw system_error("listener");
    }
    address_ = address;
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    stop_ = eventfd(0, EFD_CLOEXEC);
    if (epoll_ < 0 || stop_ < 0) throw system_error("epoll or eventfd");
    watch(stop_);
    reader_ = std::thread([this] { drain(); });
  }

  ~LoopbackConnections() {
    const std::uint64_t one = 1;
    if (write(stop_, &one, sizeof one) == sizeof one) reader_.join();
    else reader_.detach();
    for (const int fd : writers_) close(fd);
    for (const int fd : readers_) close(fd);
    close(epoll_);
    close(stop_);
    close(listener_);
  }
  LoopbackConnections(const LoopbackConnections&) = delete;
  LoopbackConnections& operator=(const LoopbackConnections&) = delete;

  // Makes connections until there are `count`; throws std::system_error if it cannot
  // (out of descriptors or ephemeral ports).
  void ensure(std::size_t count) {
    while (writers_.size() < count) {
      const int reader = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (reader < 0) throw system_error("socket");
      if (connect(reader, reinterpret_cast<const sockaddr*>(&address_), sizeof address_) != 0) {
        const auto error = system_error("connect");
        close(reader);
        throw error;
      }
      const int writer = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (writer < 0) {
        const auto error = system_error("accept");
        close(reader);
        throw error;
      }
      // Each line leaves at once, as a chat server sends it (no Nagle batching).
      const int on = 1;
      setsockopt(writer, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
      writers_.push_back(writer);
      readers_.push_back(reader);
      watch(reader);
    }
  }

  int writer(std::size_t index) const { return writers_[index]; }

  std::uint64_t received() const { return received_.load(); }
  // Blocks until the reader has drained at least `bytes` in all.
  void wait_until_received(std::uint64_t bytes) const {
    for (std::uint64_t now = received_.load(); now < bytes; now = received_.load()) {
      received_.wait(now);
    }
  }

 private:
  void watch(int fd) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0) throw system_error("epoll_ctl");
  }

  // The reader thread: one read per ready socket per wake-up (level-triggered, so a
  // socket with more left is reported again), then publishes the byte count.
  void drain() {
    std::vector<epoll_event> events(256);
    std::vector<char> buffer(1 << 16);
    for (;;) {
      const int ready = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), -1);
      if (ready < 0) {
        if (errno == EINTR) continue;
        return;
      }
      std::uint64_t bytes = 0;
      for (int i = 0; i < ready; ++i) {
        const int fd = events[i].data.fd;
        if (fd == stop_) return;
        const ssize_t n = recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n > 0) bytes += static_cast<std::uint64_t>(n);
      }
      if (bytes) {
        received_.fetch_add(bytes);
        received_.notify_all();
      }
    }
  }

  int listener_ = -1;
  int epoll_ = -1;
  int stop_ = -1;
  sockaddr_in address_{};
  std::vector<int> writers_;
  std::vector<int> readers_;
  std::atomic<std::uint64_t> received_{0};
  std::thread reader_;
};

LoopbackConnections& loopback_connections() {
  static LoopbackConnections connections;
  return connections;
}

// 31 bytes of content and the LF: a short chat line.
const std::string line = "hello from client 0042 seq 0001\n";

// range(0): connections; lines_per_call: 1 = one write() per line, more = one writev()
// gathering that many lines, as a server writing a whole outbox at once.
void write_lines(benchmark::State& state, int lines_per_call) {
  const auto sockets = static_cast<std::size_t>(state.range(0));
  LoopbackConnections* connections = nullptr;
  try {
    connections = &loopback_connections();
    connections->ensure(sockets);
  } catch (const std::system_error& error) {
    state.SkipWithError(error.what());
    return;
  }
  std::vector<iovec> gather(static_cast<std::size_t>(lines_per_call),
                            iovec{const_cast<char*>(line.data()), line.size()});
  const auto bytes_per_call = static_cast<ssize_t>(line.size() * gather.size());
  const std::uint64_t bytes_per_round = sockets * static_cast<std::uint64_t>(bytes_per_call);
  const std::uint64_t start = connections->received();
  std::uint64_t sent = start;
  for (auto _ : state) {
    // The reader may lag one round behind, no more: what is measured is a rate the
    // machine sustains, not the filling of socket buffers.
    if (sent - start >= bytes_per_round) connections->wait_until_received(sent - bytes_per_round);
    for (std::size_t i = 0; i < sockets; ++i) {
      const ssize_t written =
          lines_per_call == 1 ? write(connections->writer(i), line.data(), line.size())
                              : writev(connections->writer(i), gather.data(), lines_per_call);
      if (written != bytes_per_call) {
        state.SkipWithError(("short or failed write: " + std::to_string(written)).c_str());
        break;
      }
    }
    sent += bytes_per_round;
  }
  connections->wait_until_received(sent);  // nothing left behind for the next benchmark
  const auto calls = static_cast<double>(sockets * state.iterations());
  state.SetItemsProcessed(static_cast<std::int64_t>(calls) * lines_per_call);
  state.SetBytesProcessed(static_cast<std::int64_t>(calls) * bytes_per_call);
  state.counters["syscalls"] = benchmark::Counter(calls, benchmark::Counter::kIsRate);
  state.counters["sockets"] = static_cast<double>(sockets);
  state.counters["lines_per_call"] = lines_per_call;
}

}  // namespace

void register_syscall_benchmarks(const Sizes& sizes) {
  for (const int lines : {1, 8, 64}) {
    const std::string name =
        lines == 1 ? "syscall/write" : "syscall/writev/lines:" + std::to_string(lines);
    auto* benchmark = benchmark::RegisterBenchmark(name.c_str(), write_lines, lines)
                          ->ArgName("sockets")
                          ->UseRealTime();
    for (const int sockets : sizes.sockets) benchmark->Arg(sockets);
  }
}

}  // namespace microbench
