// chat-threads: one OS thread per connection, blocking reads (the seed's counterfactual).
//
// Each connection's thread reads a line, relays it, loops. Relaying queues the one shared
// message in each receiver's outbox under the room lock, and never touches a socket
// there. Writing is "writer combining": whoever finds a receiver's outbox idle becomes
// its writer and writes what the socket takes at once, after the room lock is released;
// others who deliver meanwhile only queue. Only a receiver whose socket is full gets a
// thread of its own, which waits for it (at most --write-timeout-ms without progress)
// and ends when the queue is empty; senders that find its queue past --max-pending
// disconnect it. So a connection costs one thread, not two, and a slow reader costs the
// others nothing. docs/servers.md says why.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "chat/backoff.hpp"
#include "chat/hub.hpp"
#include "chat/line_decoder.hpp"
#include "chat/options.hpp"
#include "chat/outbox.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using chat::Message;
using chat::Outbox;

chat::ServerOptions options;
std::size_t stack_size = 0;  // 0: the system's default (ulimit -s)

// ---- session -------------------------------------------------------------------------

struct Session : chat::Participant, std::enable_shared_from_this<Session> {
  explicit Session(int socket) : fd(socket), decoder(options.max_line), outbox(options.max_pending) {}

  const int fd;
  chat::LineDecoder decoder;  // only this session's thread reads

  std::mutex mutex;  // guards everything below
  Outbox outbox;
  bool writing = false;  // some thread is draining the outbox
  bool closed = false;   // disconnected: queue nothing more
  Clock::time_point last_progress;  // output became pending, or the peer took a byte
  std::condition_variable writer_done;
};

using SessionPtr = std::shared_ptr<Session>;

// ---- room ----------------------------------------------------------------------------

std::mutex room_mutex;  // guards the hub's rooms; counters are atomic
chat::Hub<Session, std::atomic<std::uint64_t>> hub("threads");

// ---- deliver -------------------------------------------------------------------------

// Called with the session's mutex held. Shuts the socket so that its thread wakes up
// and cleans up; the descriptor itself is closed only by that thread.
void disconnect_slow(Session& s) {
  s.closed = true;
  ++hub.counters().slow_disconnects;
  ::shutdown(s.fd, SHUT_RDWR);
  if (!s.writing) s.outbox.clear();  // else the writer clears it when it looks again
}

// Queues `message` for `s`. Returns true if the caller became the writer and must call
// flush(s).
bool enqueue(Session& s, const Message& message, Outbox::Kind kind) {
  std::lock_guard lock(s.mutex);
  if (s.closed) return false;
  const bool was_empty = s.outbox.empty();
  if (!s.outbox.push(message, kind)) {
    disconnect_slow(s);
    return false;
  }
  if (was_empty) s.last_progress = Clock::now();
  if (s.writing) return false;
  s.writing = true;
  return true;
}

// Drains s's outbox; the caller is its writer. With may_wait false it stops at the
// first write that would block and returns false, still the writer; with may_wait it
// waits for the peer until --write-timeout-ms after its last progress, then disconnects.
bool flush(Session& s, bool may_wait) {
  constexpr std::size_t kGather = 64;  // messages per writev
  std::array<std::string_view, kGather> views;
  std::array<iovec, kGather> iov;
  std::unique_lock lock(s.mutex);
  while (!s.closed && !s.outbox.empty()) {
    const std::size_t n = s.outbox.gather(views);
    for (std::size_t i = 0; i < n; ++i) iov[i] = {const_cast<char*>(views[i].data()), views[i].size()};
    const auto deadline = s.last_progress + options.write_timeout;
    lock.unlock();
    msghdr message{};
    message.msg_iov = iov.data();
    message.msg_iovlen = n;
    ssize_t written = ::sendmsg(s.fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    const int error = written < 0 ? errno : 0;
    bool timed_out = false;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      if (!may_wait) return false;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{s.fd, POLLOUT, 0};
      timed_out = left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) == 0;
      written = 0;
    }
    lock.lock();
    if (s.closed) break;
    if (written < 0 && error != EINTR) {  // reset or gone: its own thread will notice
      s.closed = true;
      ::shutdown(s.fd, SHUT_RDWR);
    } else if (timed_out) {
      disconnect_slow(s);
    } else if (written > 0) {
      hub.counters().lines_out += s.outbox.consume(static_cast<std::size_t>(written));
      hub.counters().bytes_out += static_cast<std::size_t>(written);
      s.last_progress = Clock::now();
    }
  }
  if (s.closed) s.outbox.clear();
  s.writing = false;
  s.writer_done.notify_all();
  return true;
}

// Runs body(session) on a detached thread of --stack-size; false if the system has no
// thread to give (EAGAIN).
template <void (*body)(Session&)>
bool spawn(const SessionPtr& session) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (stack_size != 0) pthread_attr_setstacksize(&attr, stack_size);
  auto* arg = new SessionPtr(session);
  const auto run = [](void* p) -> void* {
    const std::unique_ptr<SessionPtr> owned(static_cast<SessionPtr*>(p));
    body(**owned);
    return nullptr;
  };
  pthread_t thread;
  const int error = pthread_create(&thread, &attr, run, arg);
  pthread_attr_destroy(&attr);
  if (error != 0) delete arg;
  return error == 0;
}

// The thread of a receiver that fell behind: waits for it and drains its queue.
void drain(Session& s) { flush(s, true); }

// Relays one line or runs one command. Returns false when the session should end.
bool handle_line(Session& s, std::string_view line, std::vector<SessionPtr>& writers) {
  writers.clear();
  chat::Hub<Session, std::atomic<std::uint64_t>>::Outcome outcome;
  {
    std::lock_guard lock(room_mutex);
    outcome = hub.handle(s, line, [&](Session& receiver, const Message& message) {
      if (enqueue(receiver, message, Outbox::Kind::chat)) writers.push_back(receiver.shared_from_this());
    });
  }
  for (const SessionPtr& r : writers) {
    if (!flush(*r, false) && !spawn<drain>(r)) flush(*r, true);  // no thread to spare: wait here
  }
  if (outcome.reply && enqueue(s, outcome.reply, Outbox::Kind::reply)) flush(s, true);
  return !outcome.quit;
}

// ---- connection thread ---------------------------------------------------------------

// Sends what is still queued (bounded by the write timeout), then closes.
void finish(Session& s) {
  std::unique_lock lock(s.mutex);
  s.writer_done.wait(lock, [&] { return !s.writing; });
  if (!s.closed && !s.outbox.empty()) {
    s.writing = true;
    lock.unlock();
    flush(s, true);
    lock.lock();
  }
  s.closed = true;
  s.outbox.clear();
  lock.unlock();
  ::close(s.fd);
}

void serve(Session& s) {
  std::vector<SessionPtr> writers;
  std::array<char, 4096> buffer;
  for (;;) {
    const ssize_t n = ::recv(s.fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    hub.counters().bytes_in += static_cast<std::size_t>(n);
    const auto status = s.decoder.feed({buffer.data(), static_cast<std::size_t>(n)},
                                       [&](std::string_view line) { return handle_line(s, line, writers); });
    if (status == chat::LineDecoder::Status::line_too_long) {
      if (enqueue(s, chat::replies::line_too_long(), Outbox::Kind::reply)) flush(s, true);
    }
    if (status != chat::LineDecoder::Status::ok) break;
  }
  {
    std::lock_guard lock(room_mutex);
    hub.exit(s);
  }
  finish(s);
}

// ---- accept loop ---------------------------------------------------------------------

void reject(int fd) {
  const std::string& text = *chat::replies::server_full();
  const ssize_t written = ::send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (written > 0) hub.counters().bytes_out += static_cast<std::size_t>(written);
  ++hub.counters().rejected;
  ::close(fd);
}

void accept_loop(int listener, const std::atomic<bool>& stopping) {
  chat::Backoff backoff;
  for (;;) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (stopping) {
      if (fd >= 0) ::close(fd);
      return;
    }
    if (fd < 0) {
      if (chat::is_resource_exhaustion(errno)) std::this_thread::sleep_for(backoff.next());
      continue;  // anything else (ECONNABORTED, EINTR, ...) concerns one peer only
    }
    backoff.reset();
    const int on = 1;  // lines are small and latency counts: no Nagle delay
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    auto session = std::make_shared<Session>(fd);
    {
      std::lock_guard lock(room_mutex);
      if (options.max_clients != 0 && hub.counters().clients >= options.max_clients) {
        session.reset();
      } else {
        hub.enter(*session);  // before its thread runs, so --max-clients counts it
      }
    }
    if (!session) {
      reject(fd);
    } else if (!spawn<serve>(session)) {  // EAGAIN: out of threads or memory for a stack
      {
        std::lock_guard lock(room_mutex);
        hub.exit(*session);
      }
      reject(fd);
    }
  }
}

// ---- main ----------------------------------------------------------------------------

int listen_on(const std::string& address, std::uint16_t port, std::uint16_t& bound_port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) {
    std::fprintf(stderr, "chat-threads: --bind %s is not an IPv4 address\n", address.c_str());
    return -1;
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  socklen_t length = sizeof sa;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, SOMAXCONN) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &length) != 0) {
    std::fprintf(stderr, "chat-threads: cannot listen on %s:%u: %s\n", address.c_str(), port, std::strerror(errno));
    return -1;
  }
  bound_port = ntohs(sa.sin_port);
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  options = chat::parse_server_options(argc, argv, "threads", [](CLI::App& app) {
    chat::add_stack_size_option(app, stack_size, "default: the system's (ulimit -s)");
  });

  // Signals are taken by one thread with sigwait; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::uint16_t port = 0;
  const int listener = listen_on(options.bind, options.port, port);
  if (listener < 0) return 1;
  chat::announce_listening(options.bind, port, hub.variant());

  std::atomic<bool> stopping = false;
  std::thread accepter(accept_loop, listener, std::cref(stopping));

  int signal = 0;
  sigwait(&signals, &signal);
  stopping = true;
  ::shutdown(listener, SHUT_RDWR);  // wakes accept()
  accepter.join();
  {
    std::lock_guard lock(room_mutex);
    hub.for_each_session([](Session& s) { ::shutdown(s.fd, SHUT_RDWR); });
  }
  // Each thread sees its socket end, leaves and closes; wait for them, but not for ever.
  const auto deadline = Clock::now() + std::chrono::milliseconds(1500);
  while (hub.counters().clients > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string stats;
  {
    std::lock_guard lock(room_mutex);
    stats = hub.stats();
  }
  std::fprintf(stderr, "%s\n", stats.c_str());
  std::fflush(stderr);
  // Connection threads may still be closing sockets; there is nothing left to clean up
  // that the kernel will not, so leave without running destructors under their feet.
  std::_Exit(0);
}
