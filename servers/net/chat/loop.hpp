#pragma once
// What chat-asio and chat-coro share beyond the Asio glue (chat/net.hpp), in the words
// of docs/servers.md ("Names"): one thread's event loop, its io_context and what its
// sessions share, their admission and shutdown (Loop); what a session does whatever
// drives it (Connection); every Loop, the acceptor and the hand-over of accepted
// connections (Server); and main(). A Loop and its sessions are touched only by their
// thread, so nothing here is locked; other threads reach it by posting to `io`
// (chat/relay.hpp). What differs between the variants, how a session waits to read and
// to write, the sweep that drives check_write_timeout, the accept loop and the signal
// wait, stays in each main.cpp.

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/intrusive/list.hpp>
#include <cstddef>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "chat/backoff.hpp"
#include "chat/hub.hpp"
#include "chat/line_decoder.hpp"
#include "chat/net.hpp"
#include "chat/options.hpp"
#include "chat/outbox.hpp"
#include "chat/relay.hpp"

namespace chat::net {

// Every open session of a thread, for shutdown; a session unlinks itself when destroyed.
using SessionHook = boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

// One thread's event loop and what it owns: the io_context, the sessions, their hub and
// relay, the sweep timer and the read buffer. Session derives from Connection<Session>
// (below).
template <class Session>
struct Loop {
  Loop(const ServerOptions& options, std::string_view variant, Cluster<Session>& cluster, std::size_t thread)
      : options(options),
        hub(variant),
        relay(cluster, thread, io, hub, [](Session& receiver, const Message& message) {
          receiver.deliver(message, Outbox::Kind::chat);
        }) {}

  // A connection handed to this thread; `full`: over --max-clients, refuse it.
  void admit(Socket socket, bool full) {
    if (stopped) return;  // handed over just before shutdown: closed as it goes
    if (full) return refuse(std::move(socket), options, hub.counters(), closers);
    std::make_shared<Session>(*this, std::move(socket))->start();
  }

  void stop() {
    stopped = true;
    sweep_timer.cancel();
    relay.wake();  // sessions waiting for credit
    for (Session& session : sessions) session.stop();
    while (!closers.empty()) closers.front().close();
    // The sessions leave their rooms next (Session::stop posts that); then nothing is left
    // to run and io.run() returns.
  }

  const ServerOptions& options;
  boost::asio::io_context io{1};  // one thread
  typename Relay<Session>::Hub hub;
  Relay<Session> relay;  // rooms and /stats across threads
  boost::intrusive::list<Session, boost::intrusive::constant_time_size<false>> sessions;
  CloserList closers;  // connections in their lingering close
  // The first I/O object: where an io_uring build finds io_uring missing (chat/net.hpp).
  // The variant's sweep runs on it: one sweep over the sessions every tenth of
  // --write-timeout-ms, not a timer per session, so an idle session holds no timer.
  Timer sweep_timer = first_io_object<Timer>(io, options);
  bool stopped = false;
  // One read buffer for all: a session reads only once its socket is readable and hands
  // the bytes to its LineDecoder before any other session runs.
  std::array<char, 64 * 1024> read_buffer;
};

// A session, but for how it waits. Session provides begin_reading() (wait for
// readability and for credit, then on_readable(), until it returns false) and
// begin_writing() (after the current step, write_queued() until the outbox is empty or
// the peer is gone, keeping progress_ and clearing writing_).
template <class Session>
class Connection : public Participant, public SessionHook, public std::enable_shared_from_this<Session> {
 public:
  Connection(Loop<Session>& loop, Socket socket)
      : loop_(loop),
        socket_(std::move(socket)),
        decoder_(loop.options.max_line),
        outbox_(loop.options.max_pending) {}

  void start() {
    prepare(socket_);
    loop_.sessions.push_back(self());
    loop_.hub.enter(self());
    self().begin_reading();
  }

  // Queues a message; starts the write step unless one is under way.
  void deliver(const Message& message, Outbox::Kind kind) {
    if (stopped_) return;
    if (!outbox_.push(message, kind)) {  // over --max-pending
      ++loop_.hub.counters().slow_disconnects;
      return stop();
    }
    if (writing_) return;
    writing_ = true;
    progress_ = Clock::now();
    self().begin_writing();
  }

  // Closes the connection at once; whatever is queued is dropped.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    boost::system::error_code ignored;
    socket_.close(ignored);  // the pending wait completes with operation_aborted
    outbox_.clear();
    // Leave the room after the current step: stop() may run inside hub.handle(), which is
    // walking that room's members.
    boost::asio::post(socket_.get_executor(), [self = this->shared_from_this()] { self->loop_.hub.exit(*self); });
  }

  // Disconnects a slow receiver: output pending and no byte taken for --write-timeout-ms.
  void check_write_timeout(Clock::time_point now) {
    if (stopped_ || !writing_ || now - progress_ < loop_.options.write_timeout) return;
    ++loop_.hub.counters().slow_disconnects;
    stop();
  }

 protected:
  // Before a read: false if this session is to wait for credit first (chat/relay.hpp).
  bool must_wait_for_credit() { return !stopped_ && !loop_.relay.may_read(); }

  // Reads what is there and handles its lines. false: this session reads no more.
  bool on_readable() {
    if (stopped_) return false;
    loop_.relay.catch_up();  // lines relayed from other threads first (chat/relay.hpp)
    boost::system::error_code error;
    const std::size_t size = socket_.read_some(boost::asio::buffer(loop_.read_buffer), error);
    if (error == boost::asio::error::would_block) return true;
    if (error == boost::asio::error::eof) return finish(true);
    if (error) {  // reset: nothing more reaches the peer
      stop();
      return false;
    }
    loop_.hub.counters().bytes_in += size;
    const auto status = decoder_.feed({loop_.read_buffer.data(), size}, [this](auto line) {
      const auto outcome = loop_.hub.handle(self(), line, [](Session& receiver, auto& message) {
        receiver.deliver(message, Outbox::Kind::chat);
      });
      if (outcome.reply) deliver(outcome.reply, Outbox::Kind::reply);
      return !outcome.quit && !stopped_;
    });
    if (status == LineDecoder::Status::line_too_long) deliver(replies::line_too_long(), Outbox::Kind::reply);
    if (status != LineDecoder::Status::ok) return finish(false);
    return true;
  }

  // One write step: one writev of everything queued. false: the peer is gone (stopped).
  bool write_step() {
    const boost::system::error_code error = write_queued(socket_, outbox_, loop_.hub.counters());
    if (error && error != boost::asio::error::would_block) {
      stop();
      return false;
    }
    if (!error) progress_ = Clock::now();
    return true;
  }

  Loop<Session>& loop_;
  Socket socket_;
  LineDecoder decoder_;
  Outbox outbox_;
  Clock::time_point progress_{};  // when output became pending or the peer last took bytes
  bool writing_ = false;          // a write step is scheduled or under way
  bool stopped_ = false;

 private:
  Session& self() noexcept { return static_cast<Session&>(*this); }

  // /quit, a line too long or the end of the stream: receive nothing more, and hand the
  // socket and what is queued to a Closer (chat/net.hpp), which writes it, lingers and
  // closes. Returns false: this session reads no more.
  bool finish(bool eof) {
    if (stopped_) return false;
    stopped_ = true;
    loop_.hub.exit(self());
    boost::system::error_code ignored;
    socket_.cancel(ignored);  // a write step's wait ends aborted before the socket moves
    auto closer = std::make_shared<Closer>(std::move(socket_), std::move(outbox_), loop_.options,
                                           loop_.hub.counters(), false, eof);
    loop_.closers.push_back(*closer);
    closer->start();
    return false;
  }
};

// The server: one Loop per thread, the listening socket on the first, and the
// round-robin hand-over of what it accepts. Each main.cpp's Server derives from this and
// adds how it accepts, waits for signals and sweeps.
template <class Session>
class Server {
 public:
  Server(const ServerOptions& options, std::string_view variant)
      : options_(options), cluster_(options.threads), acceptor_(listen(make_loops(variant), options)) {}

  // Runs every Loop's io_context until shutdown; the first on the calling thread.
  void run() {
    std::vector<std::jthread> others;
    for (std::size_t t = 1; t < loops_.size(); ++t) others.emplace_back([this, t] { loops_[t]->io.run(); });
    loops_[0]->io.run();
  }
  // Once run() has returned: the final counters, every thread's.
  std::string stats() const { return loops_[0]->hub.stats(); }

 protected:
  // The next connection's Loop, round-robin: accept it straight onto its io_context.
  Loop<Session>& next() noexcept { return *loops_[next_]; }

  // A connection accepted onto next(). --max-clients is decided here, on every thread's
  // count (Cluster::held), and carried out on the connection's own thread.
  void hand_over(Socket socket) {
    Loop<Session>& loop = next();
    next_ = (next_ + 1) % loops_.size();
    const bool full = options_.max_clients != 0 && cluster_.held() >= options_.max_clients;
    if (&loop == loops_[0].get()) return loop.admit(std::move(socket), full);
    cluster_.sent_to_thread();
    boost::asio::post(loop.io, [this, &loop, full, socket = std::move(socket)]() mutable {
      loop.admit(std::move(socket), full);
      cluster_.arrived_on_thread();
    });
  }

  // SIGINT/SIGTERM: accept no more, and stop every Loop.
  void shutdown() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    backoff_timer_.cancel();
    for (auto& loop : loops_) boost::asio::post(loop->io, [&one = *loop] { one.stop(); });
  }

 private:
  boost::asio::io_context& make_loops(std::string_view variant) {
    for (std::size_t t = 0; t < options_.threads; ++t) {
      loops_.push_back(std::make_unique<Loop<Session>>(options_, variant, cluster_, t));
    }
    return loops_[0]->io;
  }

 protected:
  const ServerOptions options_;
  Cluster<Session> cluster_;
  std::vector<std::unique_ptr<Loop<Session>>> loops_;  // filled by acceptor_'s initializer
  std::size_t next_ = 0;                                // the Loop the next connection goes to
  Acceptor acceptor_;  // on the first Loop
  Timer backoff_timer_{acceptor_.get_executor()};
  Backoff backoff_;
};

// The whole of main(): the options (with --threads), the server, its final counters on
// stderr once every thread has stopped; an error that stops it goes there too, exit 1.
template <class VariantServer>
int main(int argc, char** argv, std::string_view variant) {
  std::size_t threads = 1;
  ServerOptions options = parse_server_options(argc, argv, variant,
                                               [&threads](CLI::App& app) { add_threads_option(app, threads); });
  options.threads = threads;
  try {
    VariantServer server(options);
    server.run();
    std::cerr << server.stats() << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "chat-" << variant << ": " << error.what() << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace chat::net
