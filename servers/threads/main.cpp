// chat-threads: one OS thread per connection (docs/servers.md, docs/protocol.md).
//
// Each connection is a thread that reads a line, relays it and loops, with blocking
// reads: the seed's counterfactual. The threads share the hub and the rooms behind one
// lock; each session's outbox has a lock of its own, since any thread may deliver to it.
// No socket is written under the room lock: relaying only queues, and the delivering
// thread writes once it has let go of the lock.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <chat/backoff.hpp>
#include <chat/hub.hpp>
#include <chat/line_decoder.hpp>
#include <chat/linger.hpp>
#include <chat/options.hpp>
#include <chat/outbox.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

using chat::Outbox;
using Clock = std::chrono::steady_clock;

constexpr std::string_view variant = "threads";

// The least stack pthread_attr_setstacksize() takes (PTHREAD_STACK_MIN).
std::size_t minimum_stack_size() {
  const long minimum = ::sysconf(_SC_THREAD_STACK_MIN);
  return minimum > 0 ? static_cast<std::size_t>(minimum) : 16384;
}

// Bytes read at a time, into a buffer on each connection thread's stack.
constexpr std::size_t read_buffer_size = 4096;
// Messages handed to one writev.
constexpr std::size_t gather_limit = 64;

// ---- session --------------------------------------------------------------------------

// One connection. Held by shared_ptr because a thread that delivered to it may still be
// writing to it when its own thread ends.
struct Session : chat::Participant, std::enable_shared_from_this<Session> {
  Session(int socket, std::size_t max_pending) : socket(socket), outbox(max_pending) {}

  const int socket;
  std::mutex mutex;  // guards what follows
  Outbox outbox;
  bool writing = false;             // a thread is writing the outbox
  bool closed = false;              // disconnected: deliver nothing more
  bool handed_off = false;          // the writer role waits for this connection's own thread
  bool closing = false;             // in its lingering close: wake its thread when writing ends
  bool has_thread = false;          // `thread` runs serve() and may be woken (wake())
  pthread_t thread{};
  Clock::time_point progress;       // output became pending, or the peer took a byte
  std::condition_variable written;  // writing went false
};

using SessionPtr = std::shared_ptr<Session>;

// ---- room -----------------------------------------------------------------------------

// The server: the room and everything else the connection threads share (the hub, behind
// one lock), and the listener. No event loop (Loop): each connection has a thread of its own.
class Server {
 public:
  Server(const chat::ServerOptions& options, std::size_t stack_size);

  std::uint16_t port() const { return port_; }
  std::string stats() {
    std::lock_guard lock(room_mutex_);
    return hub_.stats();
  }

  // Accepts until SIGINT or SIGTERM, then closes every connection and returns once all
  // its threads have ended, or after 1.5 s. Runs on the main thread.
  void run();

 private:
  using Hub = chat::Hub<Session, std::atomic<std::uint64_t>>;

  void serve(const SessionPtr& session);
  void relay(Session& session, std::string_view line, bool& quit, std::vector<SessionPtr>& writers);
  bool deliver(Session& receiver, const chat::Message& message, Outbox::Kind kind);
  void write_now(Session& receiver);
  void flush(Session& receiver);
  msghdr gather(Session& receiver, std::array<iovec, gather_limit>& out);
  void sent(Session& receiver, std::size_t bytes);
  void done_writing(Session& receiver);
  void disconnect(Session& session);
  void close_lingering(Session& session, bool eof);
  void serve_refused(pollfd* listener);
  void admit(int socket);
  void reject(int socket);
  void stop();
  template <class Body>
  bool spawn(Body body);

  chat::ServerOptions options_;
  pthread_attr_t thread_attributes_;  // detached, --stack-size; never destroyed, as the server
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::mutex room_mutex_;  // guards the hub's rooms; its counters are atomic
  Hub hub_{variant};
  std::atomic<std::size_t> threads_ = 0;  // connection and writer threads running
  bool stopping_ = false;                 // guarded by room_mutex_
  std::unordered_set<Session*> closing_;  // in close_lingering(), for stop(); guarded by room_mutex_
  Clock::time_point stopped_at_;          // set by stop(); run() reads it after joining its thread
  // Refused clients in their short lingering close; only the accept loop touches them.
  struct Refused {
    int socket;
    chat::Linger policy;
  };
  std::vector<Refused> refused_;
};

// Wakes a connection thread out of its ppoll() (SIGUSR1 is unblocked only there, so the
// signal can neither be lost nor interrupt anything else). Called with its lock held.
constexpr int wake_signal = SIGUSR1;
void wake(Session& session) {
  if (session.has_thread) pthread_kill(session.thread, wake_signal);
}
// The signal mask of a thread in ppoll(): SIGINT and SIGTERM blocked, the wake signal not.
sigset_t wakeable_mask() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  return mask;
}
// Waits for `events` on `socket`, for the wake signal, or `timeout` (-1: none).
// Returns revents, 0 on timeout or wake.
short wait_for(int socket, short events, int timeout_ms) {
  static const sigset_t mask = wakeable_mask();
  pollfd p{socket, events, 0};
  timespec timeout{timeout_ms / 1000, (timeout_ms % 1000) * 1'000'000L};
  return ::ppoll(&p, 1, timeout_ms < 0 ? nullptr : &timeout, &mask) > 0 ? p.revents : 0;
}
int milliseconds_until(Clock::time_point when) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(when - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

// ---- deliver --------------------------------------------------------------------------

// Queues `message` for `receiver`. Runs under the room lock, so it never writes: it
// returns true when the caller has become the receiver's writer and must call
// write_now() once the room lock is released (after the rest of what it read, so that
// all of it goes out in one writev).
bool Server::deliver(Session& receiver, const chat::Message& message, Outbox::Kind kind) {
  std::lock_guard lock(receiver.mutex);
  if (receiver.closed) return false;
  const bool was_idle = receiver.outbox.empty();
  if (!receiver.outbox.push(message, kind)) {
    ++hub_.counters().slow_disconnects;  // over --max-pending
    disconnect(receiver);
    return false;
  }
  if (was_idle) receiver.progress = Clock::now();
  if (receiver.writing) return false;  // its writer will take this message too
  receiver.writing = true;
  return true;
}

// Writer combining without waiting: the delivering thread writes into the receiver's
// socket buffer as long as it has room. What does not fit goes to a writer thread of
// the receiver's own, which waits (up to --write-timeout-ms per byte of progress), so a
// slow receiver costs the sender nothing and the others no delay.
void Server::write_now(Session& receiver) {
  std::unique_lock lock(receiver.mutex);
  std::array<iovec, gather_limit> buffers;
  while (!receiver.outbox.empty() && !receiver.closed) {
    const msghdr message = gather(receiver, buffers);
    lock.unlock();
    const ssize_t n = ::sendmsg(receiver.socket, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    const int error = n < 0 ? errno : 0;
    lock.lock();
    if (n > 0) sent(receiver, static_cast<std::size_t>(n));
    if (error == EAGAIN || error == EWOULDBLOCK) {
      lock.unlock();
      if (spawn([this, self = receiver.shared_from_this()] { flush(*self); })) return;
      // No thread to spare. Waiting here would make every receiver after this one (and
      // our own client) wait on this receiver's socket: hand the writer role to the
      // receiver's own connection thread instead, which waits on nothing else.
      lock.lock();
      if (!receiver.closed) {
        receiver.handed_off = true;  // `writing` stays true: the role is passed on
        return wake(receiver);
      }
      break;
    }
    if (error != 0 && error != EINTR) disconnect(receiver);  // the peer is gone
  }
  done_writing(receiver);
}

// The writer thread: waits for the socket and writes until the outbox is empty or the
// receiver is gone.
void Server::flush(Session& receiver) {
  std::unique_lock lock(receiver.mutex);
  std::array<iovec, gather_limit> buffers;
  while (!receiver.outbox.empty() && !receiver.closed) {
    const msghdr message = gather(receiver, buffers);
    const auto deadline = receiver.progress + options_.write_timeout;
    lock.unlock();
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd writable{receiver.socket, POLLOUT, 0};
    const bool timed_out =
        left.count() <= 0 || ::poll(&writable, 1, static_cast<int>(left.count())) == 0;
    const ssize_t n = timed_out ? 0 : ::sendmsg(receiver.socket, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    const int error = n < 0 ? errno : 0;
    lock.lock();
    if (n > 0) sent(receiver, static_cast<std::size_t>(n));
    if (timed_out && !receiver.closed) ++hub_.counters().slow_disconnects;
    if (timed_out && receiver.closing) {  // give up on the output; its thread still lingers
      receiver.outbox.clear();
      break;
    }
    if (timed_out || (error != 0 && error != EAGAIN && error != EINTR)) disconnect(receiver);
  }
  done_writing(receiver);
}

// One sendmsg's worth of the receiver's outbox, as iovecs in `out`.
msghdr Server::gather(Session& receiver, std::array<iovec, gather_limit>& out) {
  std::array<std::string_view, gather_limit> views;
  const std::size_t count = receiver.outbox.gather(views);
  for (std::size_t i = 0; i < count; ++i) out[i] = {const_cast<char*>(views[i].data()), views[i].size()};
  msghdr message{};
  message.msg_iov = out.data();
  message.msg_iovlen = count;
  return message;
}

// Books what the peer took. Called by the receiver's writer with its lock held; the
// outbox is intact even if the receiver was disconnected meanwhile (disconnect() leaves
// it to the writer), and what the kernel took was written, so it counts.
void Server::sent(Session& receiver, std::size_t bytes) {
  hub_.counters().bytes_out += bytes;
  hub_.counters().lines_out += receiver.outbox.consume(bytes);
  receiver.progress = Clock::now();
}

// Called with the receiver's lock held, the same hold in which its writer found the
// outbox empty: were the lock let go in between, a deliver() could still see `writing`,
// leave its message to this writer, and the message would wait with no writer at all.
void Server::done_writing(Session& receiver) {
  if (receiver.closed) receiver.outbox.clear();
  receiver.writing = false;
  receiver.handed_off = false;
  receiver.written.notify_all();
  if (receiver.closing) wake(receiver);
}

// Drops the connection: its thread's blocked recv() returns, and the thread winds down;
// only that thread closes the descriptor (or admit(), for a client that never got a
// thread), once no writer is left, so no other thread can write to a reused one.
// Called with the session's lock held. A writer still busy clears the outbox itself.
void Server::disconnect(Session& session) {
  if (session.closed) return;
  session.closed = true;
  ::shutdown(session.socket, SHUT_RDWR);
  if (!session.writing) session.outbox.clear();
}

// ---- connection thread ----------------------------------------------------------------

// The connection's thread: read a line, relay it, loop.
void Server::serve(const SessionPtr& pointer) {
  Session& session = *pointer;
  chat::LineDecoder decoder(options_.max_line);
  std::array<char, read_buffer_size> buffer;
  std::vector<SessionPtr> writers;  // receivers this thread is to write to
  bool quit = false;  // /quit or a line too long: close lingering
  bool eof = false;   // the peer has nothing more to send; it may still be reading
  {
    std::lock_guard lock(session.mutex);
    session.thread = pthread_self();
    session.has_thread = true;
  }
  while (!quit) {
    {
      std::unique_lock lock(session.mutex);
      if (session.handed_off) {  // a writer found no thread to spare: write here
        session.handed_off = false;
        lock.unlock();
        flush(session);
      }
    }
    if (wait_for(session.socket, POLLIN, -1) == 0) continue;  // woken
    const ssize_t n = ::recv(session.socket, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    eof = n == 0;
    if (n <= 0) break;
    hub_.counters().bytes_in += static_cast<std::size_t>(n);
    const auto status = decoder.feed({buffer.data(), static_cast<std::size_t>(n)}, [&](std::string_view line) {
      relay(session, line, quit, writers);
      return !quit;
    });
    if (status == chat::LineDecoder::Status::line_too_long) {
      if (deliver(session, chat::replies::line_too_long(), Outbox::Kind::reply)) writers.push_back(pointer);
      quit = true;
    }
    // Every line of this read goes out to a receiver in one writev.
    for (const SessionPtr& receiver : writers) write_now(*receiver);
    writers.clear();
    if (writers.capacity() > 1024) writers = {};  // a relay to a huge room: do not keep it
  }

  {
    std::lock_guard lock(room_mutex_);
    hub_.exit(session);  // it receives nothing more
  }
  if (quit || eof) close_lingering(session, eof);
  std::unique_lock lock(session.mutex);
  disconnect(session);  // a reset (drop what is queued), or the close is over
  if (session.handed_off) done_writing(session);  // the role was ours: nobody else has it
  session.written.wait(lock, [&] { return !session.writing; });
  session.closed = true;
  session.has_thread = false;
  session.outbox.clear();
  lock.unlock();
  ::close(session.socket);
}

// /quit or a line too long: the lingering close (chat/linger.hpp). While the queued output
// is written (by its writer thread, or here when the role was handed to this thread),
// read and discard; then FIN, then discard until EOF, the deadline or --linger-bytes.
// After the peer's EOF (`eof`) only the writing is left: there is nothing to read.
void Server::close_lingering(Session& session, bool eof) {
  {
    std::lock_guard lock(room_mutex_);
    if (stopping_) return;
    closing_.insert(&session);  // so that stop() can cut it short
  }
  ++hub_.counters().lingering;
  chat::Linger policy(options_);
  std::array<char, read_buffer_size> buffer;
  bool reading = !eof;  // until EOF: a socket at EOF is always readable
  const auto discard = [&] {
    const ssize_t n = ::recv(session.socket, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) return false;
    hub_.counters().bytes_in += static_cast<std::size_t>(n);
    return policy.discarded(static_cast<std::size_t>(n), Clock::now());
  };
  std::unique_lock lock(session.mutex);
  session.closing = true;
  while (session.writing && !session.closed) {
    const bool mine = session.handed_off;  // else another thread writes, and wakes us
    const auto deadline = session.progress + options_.write_timeout;
    if (mine && Clock::now() >= deadline) {  // the write timeout gives up on the output
      ++hub_.counters().slow_disconnects;
      session.outbox.clear();
      done_writing(session);
      break;
    }
    std::array<iovec, gather_limit> iov;
    const msghdr message = gather(session, iov);
    lock.unlock();
    const short events = static_cast<short>((reading ? POLLIN : 0) | (mine ? POLLOUT : 0));
    const short ready = wait_for(session.socket, events, mine ? milliseconds_until(deadline) : -1);
    if (ready & POLLIN) reading = discard();
    const ssize_t n = (ready & POLLOUT) ? ::sendmsg(session.socket, &message, MSG_DONTWAIT | MSG_NOSIGNAL) : 0;
    const int error = n < 0 ? errno : 0;
    lock.lock();
    if (n > 0) sent(session, static_cast<std::size_t>(n));
    if (ready & (POLLERR | POLLHUP)) reading = false;
    if (error != 0 && error != EAGAIN && error != EINTR) disconnect(session);
    if (mine && session.outbox.empty()) done_writing(session);
  }
  const bool linger = !session.closed && reading;
  lock.unlock();
  if (linger) {
    ::shutdown(session.socket, SHUT_WR);
    policy.drained(Clock::now());
    while (wait_for(session.socket, POLLIN, milliseconds_until(policy.deadline())) != 0 && discard()) {
    }
  }
  --hub_.counters().lingering;
  std::lock_guard room_lock(room_mutex_);
  closing_.erase(&session);
}

// One line: the hub relays it under the room lock; the receivers this thread became the
// writer of (its own client too, for a reply) are added to `writers`.
void Server::relay(Session& session, std::string_view line, bool& quit, std::vector<SessionPtr>& writers) {
  std::lock_guard lock(room_mutex_);
  const auto outcome = hub_.handle(session, line, [&](Session& receiver, const chat::Message& message) {
    if (deliver(receiver, message, Outbox::Kind::chat)) writers.push_back(receiver.shared_from_this());
  });
  if (outcome.reply && deliver(session, outcome.reply, Outbox::Kind::reply)) {
    writers.push_back(session.shared_from_this());
  }
  quit = outcome.quit;
}

// ---- accept loop ----------------------------------------------------------------------

Server::Server(const chat::ServerOptions& options, std::size_t stack_size) : options_(options) {
  // Every thread is made from these. Each call's result is checked: glibc refuses a size
  // it cannot honour with EINVAL, and would otherwise run the default stack silently.
  // The size in /stats is the one the threads get (0 asks for the default, ulimit -s).
  std::size_t effective = 0;
  if (pthread_attr_init(&thread_attributes_) != 0 ||
      pthread_attr_setdetachstate(&thread_attributes_, PTHREAD_CREATE_DETACHED) != 0 ||
      (stack_size != 0 && pthread_attr_setstacksize(&thread_attributes_, stack_size) != 0) ||
      pthread_attr_getstacksize(&thread_attributes_, &effective) != 0) {
    throw std::runtime_error("cannot use a thread stack of " + std::to_string(stack_size) + " bytes");
  }
  hub_.add_setting("stack_size", effective);

  const boost::asio::ip::tcp::endpoint endpoint(boost::asio::ip::make_address(options.bind), options.port);
  boost::asio::ip::tcp::endpoint bound;
  socklen_t length = bound.capacity();
  const int on = 1;
  listener_ = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener_ < 0 || ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      ::bind(listener_, endpoint.data(), endpoint.size()) != 0 || ::listen(listener_, SOMAXCONN) != 0 ||
      ::getsockname(listener_, bound.data(), &length) != 0) {
    throw chat::ListenError(options, std::strerror(errno));
  }
  bound.resize(length);
  port_ = bound.port();
}

void Server::run() {
  // SIGINT and SIGTERM are blocked in every thread (main() did it before any started);
  // this one takes them.
  std::thread signal_waiter([this] {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    int signal = 0;
    sigwait(&signals, &signal);
    stop();
  });
  chat::Backoff backoff;
  for (;;) {
    pollfd listener{listener_, POLLIN, 0};
    if (!refused_.empty() && (serve_refused(&listener), (listener.revents & POLLIN) == 0)) continue;
    const int socket = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (socket < 0) {
      if (chat::is_resource_exhaustion(errno)) {
        // Out of descriptors: wait (sleep, not spin); the other threads keep serving.
        std::this_thread::sleep_for(backoff.next());
        continue;
      }
      if (errno == EINVAL) break;  // stop() shut the listener
      continue;                    // a peer that gave up (ECONNABORTED), EINTR
    }
    backoff.reset();
    admit(socket);
  }
  for (const Refused& r : refused_) ::close(r.socket);
  signal_waiter.join();
  // From the signal, not from now: the accept loop may have been in a back-off sleep.
  const auto deadline = stopped_at_ + std::chrono::milliseconds(1500);
  while (threads_ > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

void Server::admit(int socket) {
  const int on = 1;  // a chat line goes out at once
  ::setsockopt(socket, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  auto session = std::make_shared<Session>(socket, options_.max_pending);
  {
    std::lock_guard lock(room_mutex_);
    if (stopping_ || chat::server_full(hub_.counters(), options_.max_clients)) {
      return reject(socket);
    }
    hub_.enter(*session);  // before its thread runs, so that --max-clients counts it
  }
  if (!spawn([this, session] { serve(session); })) {  // no thread to give (EAGAIN)
    {
      std::lock_guard lock(room_mutex_);
      hub_.exit(*session);  // it receives nothing more
    }
    // It was in the lobby meanwhile: a thread may have queued a line for it and be its
    // writer. As in serve(), the descriptor is closed only once no writer is left, or
    // that writer could write to the next client given the same number. A busy writer
    // is stopped by disconnect() (this client then gets no server-full reply). No writer
    // ever waits on a socket of someone else's (write_now), so this wait is short.
    std::unique_lock lock(session->mutex);
    if (session->writing) disconnect(*session);
    session->closed = true;
    if (session->handed_off) done_writing(*session);  // handed to a thread that never came
    session->written.wait(lock, [&] { return !session->writing; });
    session->outbox.clear();
    lock.unlock();
    reject(socket);
  }
}

// /error server-full, then a short lingering close (Linger::refused_linger) that the accept
// loop drives: no thread is spent on a client refused perhaps for want of threads. The
// socket is fresh, so its buffer takes the reply.
void Server::reject(int socket) {
  const std::string& reply = *chat::replies::server_full();
  const ssize_t n = ::send(socket, reply.data(), reply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n > 0) hub_.counters().bytes_out += static_cast<std::size_t>(n);
  ++hub_.counters().rejected;
  ::shutdown(socket, SHUT_WR);
  refused_.push_back({socket, chat::Linger(options_, true)});
  refused_.back().policy.drained(Clock::now());
  ++hub_.counters().lingering;
}

// One wait of the accept loop while refused clients linger: for the listener, their input
// (read and discarded) or the nearest deadline. Closes those that are done.
void Server::serve_refused(pollfd* listener) {
  std::vector<pollfd> waits{*listener};
  auto nearest = refused_.front().policy.deadline();
  for (const Refused& r : refused_) {
    waits.push_back({r.socket, POLLIN, 0});
    nearest = std::min(nearest, r.policy.deadline());
  }
  ::poll(waits.data(), waits.size(), milliseconds_until(nearest));
  listener->revents = waits[0].revents;
  std::size_t kept = 0;
  for (std::size_t i = 0; i < refused_.size(); ++i) {
    Refused& r = refused_[i];
    bool done = Clock::now() >= r.policy.deadline();
    if (!done && waits[i + 1].revents != 0) {
      std::array<char, read_buffer_size> buffer;
      const ssize_t n = ::recv(r.socket, buffer.data(), buffer.size(), MSG_DONTWAIT);
      if (n > 0) hub_.counters().bytes_in += static_cast<std::size_t>(n);
      done = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) ||
             (n > 0 && !r.policy.discarded(static_cast<std::size_t>(n), Clock::now()));
    }
    if (done) {
      ::close(r.socket);
      --hub_.counters().lingering;
    } else {
      refused_[kept++] = r;
    }
  }
  refused_.erase(refused_.begin() + static_cast<std::ptrdiff_t>(kept), refused_.end());
}

// Runs body on a detached thread of --stack-size; false if the system has none to give.
template <class Body>
bool Server::spawn(Body body) {
  struct Start {
    Server* server;
    Body body;
  };
  const auto run = [](void* start) -> void* {
    const std::unique_ptr<Start> owned(static_cast<Start*>(start));
    owned->body();
    --owned->server->threads_;
    return nullptr;
  };
  auto* start = new Start{this, std::move(body)};
  ++threads_;
  pthread_t thread;
  const int error = pthread_create(&thread, &thread_attributes_, run, start);
  if (error != 0) {
    --threads_;
    delete start;
  }
  return error == 0;
}

// SIGINT/SIGTERM: stop accepting, drop every connection.
void Server::stop() {
  std::lock_guard lock(room_mutex_);
  stopping_ = true;
  stopped_at_ = Clock::now();
  ::shutdown(listener_, SHUT_RDWR);  // accept() returns EINVAL
  hub_.for_each_session([this](Session& session) {
    std::lock_guard session_lock(session.mutex);
    disconnect(session);
  });
  // Lingering ones: their reads end (EOF) and their writes fail, and their threads close.
  for (Session* session : closing_) ::shutdown(session->socket, SHUT_RDWR);
}

}  // namespace

// ---- main -----------------------------------------------------------------------------

int main(int argc, char** argv) {
  std::size_t stack_size = 0;
  const chat::ServerOptions options =
      chat::parse_server_options(argc, argv, variant, [&](CLI::App& app) {
        chat::add_stack_size_option(app, stack_size, minimum_stack_size(),
                                    "default: the system's (ulimit -s)");
      });
  // Before any thread starts, so that every thread inherits it: signals go to sigwait().
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, wake_signal);  // unblocked only inside wait_for()
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  struct sigaction wake_action {};
  wake_action.sa_handler = [](int) {};  // only to interrupt ppoll(); no SA_RESTART
  sigaction(wake_signal, &wake_action, nullptr);
  try {
    Server server(options, stack_size);
    chat::announce_listening(options.bind, server.port(), variant);
    server.run();
    std::cerr << server.stats() << std::endl;
    // A thread still winding down after the grace period may yet touch the server, so
    // it is never destroyed: leave now, and the kernel closes whatever is left.
    std::_Exit(EXIT_SUCCESS);
  } catch (const std::exception& e) {  // e.g. the address is taken
    std::cerr << "chat-threads: " << e.what() << '\n';
    return EXIT_FAILURE;
  }
}
