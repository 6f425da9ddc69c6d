// chat-asio: the chat server on Boost.Asio completion callbacks, one io_context per thread
// (--threads N, default 1; rooms span the threads: chat/relay.hpp).
// The shape of Asio's chat example: a session per connection with a read step and a write
// step, one write in flight per session, everything queued written by one writev.
//
// Idle memory is what this variant is judged on, so an idle session owns no buffer and no
// pending timer: it waits for readability, then reads into one buffer that every session
// shares; its write-timeout timer runs only while output is pending.

#include <array>
#include <boost/asio.hpp>
#include <boost/intrusive/list.hpp>
#include <csignal>
#include <exception>
#include <iostream>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "chat/backoff.hpp"
#include "chat/hub.hpp"
#include "chat/line_decoder.hpp"
#include "chat/net.hpp"
#include "chat/options.hpp"
#include "chat/outbox.hpp"
#include "chat/loop.hpp"
#include "chat/relay.hpp"

namespace {

// "asio", or "asio-uring" for the build on Asio's io_uring backend (CMakeLists.txt).
constexpr std::string_view kVariant = CHAT_VARIANT;

namespace asio = boost::asio;
using boost::system::error_code;
using chat::net::Clock;
using chat::net::Socket;
using chat::net::Timer;
using Kind = chat::Outbox::Kind;

class Session;
using Cluster = chat::net::Cluster<Session>;
// One thread: its io_context, sessions, hub and relay, admission and shutdown.
using Shared = chat::net::Loop<Session>;

// ---- session: one connection; a read step and a write step.
class Session : public chat::Participant,
                public chat::net::SessionHook,
                public std::enable_shared_from_this<Session> {
 public:
  Session(Shared& shared, Socket socket);
  void start();

  void deliver(const chat::Message& message, Kind kind);
  // Closes the connection at once; whatever is queued is dropped.
  void stop();
  // Disconnects a slow receiver: output pending and no byte taken for --write-timeout-ms.
  void check_write_timeout(Clock::time_point now);

 private:
  void read();
  bool on_readable();
  bool finish(bool eof);
  void write();

  Shared& shared_;
  Socket socket_;
  chat::LineDecoder decoder_;
  chat::Outbox outbox_;
  Clock::time_point progress_{};  // when output became pending or the peer last took bytes
  bool writing_ = false;          // a write step is scheduled or waiting for writability
  bool stopped_ = false;
};

Session::Session(Shared& shared, Socket socket)
    : shared_(shared),
      socket_(std::move(socket)),
      decoder_(shared.options.max_line),
      outbox_(shared.options.max_pending) {}

void Session::start() {
  chat::net::prepare(socket_);
  shared_.sessions.push_back(*this);
  shared_.hub.enter(*this);
  read();
}

void Session::stop() {
  if (stopped_) return;
  stopped_ = true;
  error_code ignored;
  socket_.close(ignored);  // the pending wait completes with operation_aborted
  outbox_.clear();
  // Leave the room after the current step: stop() may run inside hub.handle(), which is
  // walking that room's members.
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->shared_.hub.exit(*self); });
}

// ---- deliver: queue a message; start the write step unless one is under way.
void Session::deliver(const chat::Message& message, Kind kind) {
  if (stopped_) return;
  if (!outbox_.push(message, kind)) {  // over --max-pending
    ++shared_.hub.counters().slow_disconnects;
    return stop();
  }
  if (writing_) return;
  writing_ = true;
  progress_ = Clock::now();
  // Write once the current step is over, so the lines it is still delivering to this
  // session go out in the same writev.
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->write(); });
}

void Session::check_write_timeout(Clock::time_point now) {
  if (stopped_ || !writing_ || now - progress_ < shared_.options.write_timeout) return;
  ++shared_.hub.counters().slow_disconnects;
  stop();
}

// ---- read: wait for readability, then read what is there into the shared buffer.
void Session::read() {
  socket_.async_wait(Socket::wait_read, [self = shared_from_this()](error_code error) {
    if (error) return;
    // Too much on its way to another thread: wait for it to go (chat/relay.hpp).
    if (!self->stopped_ && !self->shared_.relay.may_read()) {
      return self->shared_.relay.wait_for_credit([self](error_code) { self->read(); });
    }
    if (self->on_readable()) self->read();
  });
}

// Reads what is there and handles its lines. false: this session reads no more.
bool Session::on_readable() {
  if (stopped_) return false;
  shared_.relay.catch_up();  // lines relayed from other threads first (chat/relay.hpp)
  error_code error;
  const std::size_t size = socket_.read_some(asio::buffer(shared_.read_buffer), error);
  if (error == asio::error::would_block) return true;
  if (error == asio::error::eof) return finish(true);
  if (error) {  // reset: nothing more reaches the peer
    stop();
    return false;
  }
  shared_.hub.counters().bytes_in += size;
  const auto status = decoder_.feed({shared_.read_buffer.data(), size}, [this](auto line) {
    const auto outcome = shared_.hub.handle(*this, line, [](Session& receiver, auto& message) {
      receiver.deliver(message, Kind::chat);
    });
    if (outcome.reply) deliver(outcome.reply, Kind::reply);
    return !outcome.quit && !stopped_;
  });
  if (status == chat::LineDecoder::Status::line_too_long) {
    deliver(chat::replies::line_too_long(), Kind::reply);
  }
  if (status != chat::LineDecoder::Status::ok) return finish(false);
  return true;
}

// /quit, a line too long or the end of the stream: receive nothing more, and hand the
// socket and what is queued to a Closer (chat/net.hpp), which writes it, lingers and
// closes. Returns false: this session reads no more.
bool Session::finish(bool eof) {
  if (stopped_) return false;
  stopped_ = true;
  shared_.hub.exit(*this);
  error_code ignored;
  socket_.cancel(ignored);  // a write step's wait ends aborted before the socket moves
  auto closer = std::make_shared<chat::net::Closer>(std::move(socket_), std::move(outbox_),
                                                    shared_.options, shared_.hub.counters(),
                                                    false, eof);
  shared_.closers.push_back(*closer);
  closer->start();
  return false;
}

// ---- write: one writev of everything queued; wait for writability if it did not all go.
void Session::write() {
  if (stopped_) return;
  const error_code error = chat::net::write_queued(socket_, outbox_, shared_.hub.counters());
  if (error && error != asio::error::would_block) return stop();  // the peer is gone
  if (!error) progress_ = Clock::now();
  if (!outbox_.empty()) {
    socket_.async_wait(Socket::wait_write, [self = shared_from_this()](error_code error) {
      if (!error) self->write();
    });
    return;
  }
  writing_ = false;
}

// ---- one thread's write-timeout sweep (the timer of chat/loop.hpp): a stalled receiver
// goes at most a tenth of --write-timeout-ms late.
void sweep(Shared& shared) {
  shared.sweep_timer.expires_after(chat::net::sweep_interval(shared.options));
  shared.sweep_timer.async_wait([&shared](error_code error) {
    // Shut down; or stop() found the timer already expired, its completion queued.
    if (error || shared.stopped) return;
    const auto now = Clock::now();
    for (Session& session : shared.sessions) session.check_write_timeout(now);
    sweep(shared);
  });
}

// ---- accept loop and shutdown on SIGINT/SIGTERM, on the first thread.
class Server {
 public:
  Server(const chat::ServerOptions& options)
      : options_(options),
        cluster_(options.threads),
        threads_(make_threads(options_, cluster_)),
        acceptor_(chat::net::listen(threads_[0]->io, options)),
        backoff_timer_(threads_[0]->io.get_executor()),
        signals_(threads_[0]->io, SIGINT, SIGTERM) {
    signals_.async_wait([this](error_code error, int) {
      if (!error) shutdown();
    });
    accept();
    chat::net::announce(acceptor_, kVariant);
  }

  // Runs every thread's io_context until shutdown; the first on the calling thread.
  void run() {
    std::vector<std::jthread> others;
    for (std::size_t t = 1; t < threads_.size(); ++t) others.emplace_back([this, t] { threads_[t]->io.run(); });
    threads_[0]->io.run();
  }
  // Once run() has returned: the final counters, every thread's.
  std::string stats() const { return threads_[0]->hub.stats(); }

 private:
  static std::vector<std::unique_ptr<Shared>> make_threads(const chat::ServerOptions& options, Cluster& cluster) {
    std::vector<std::unique_ptr<Shared>> threads;
    for (std::size_t t = 0; t < options.threads; ++t) {
      threads.push_back(std::make_unique<Shared>(options, kVariant, cluster, t));
      sweep(*threads.back());
    }
    return threads;
  }

  // Round-robin: each connection is accepted straight onto the io_context of its thread.
  void accept() {
    Shared& next = *threads_[next_];
    acceptor_.async_accept(next.io, [this, &next](error_code error, Socket socket) {
      if (!acceptor_.is_open()) return;  // shut down
      if (error && chat::is_resource_exhaustion(error.value())) {
        // accept() would fail again at once: wait, keep serving, then try again.
        backoff_timer_.expires_after(backoff_.next());
        backoff_timer_.async_wait([this](error_code error) {
          if (!error) accept();
        });
        return;
      }
      if (!error) {
        backoff_.reset();
        hand_over(next, std::move(socket));
        next_ = (next_ + 1) % threads_.size();
      }
      accept();  // other errors (e.g. the peer aborted) belong to that connection only
    });
  }

  // --max-clients is decided here, on every thread's count (Cluster::held), and carried
  // out on the connection's own thread.
  void hand_over(Shared& thread, Socket socket) {
    const bool full = options_.max_clients != 0 && cluster_.held() >= options_.max_clients;
    if (&thread == threads_[0].get()) return thread.admit(std::move(socket), full);
    cluster_.sent_to_thread();
    asio::post(thread.io, [this, &thread, full, socket = std::move(socket)]() mutable {
      thread.admit(std::move(socket), full);
      cluster_.arrived_on_thread();
    });
  }

  void shutdown() {
    error_code ignored;
    acceptor_.close(ignored);
    backoff_timer_.cancel();
    for (auto& thread : threads_) asio::post(thread->io, [&one = *thread] { one.stop(); });
  }

  const chat::ServerOptions options_;
  Cluster cluster_;
  std::vector<std::unique_ptr<Shared>> threads_;
  chat::net::Acceptor acceptor_;
  Timer backoff_timer_;
  chat::Backoff backoff_;
  asio::signal_set signals_;
  std::size_t next_ = 0;  // the thread the next connection goes to
};

}  // namespace

// ---- main
int main(int argc, char** argv) {
  std::size_t threads = 1;
  chat::ServerOptions options = chat::parse_server_options(
      argc, argv, kVariant, [&threads](CLI::App& app) { chat::add_threads_option(app, threads); });
  options.threads = threads;
  try {
    Server server(options);
    server.run();
    std::cerr << server.stats() << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "chat-" << kVariant << ": " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
