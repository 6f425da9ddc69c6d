// chat-fibers: one Boost.Fiber per connection (docs/fibers.md, docs/protocol.md).
//
// Each connection is a fiber that reads a line, relays it and loops, in the blocking
// style of chat-threads; the `yield` token makes each socket call suspend that fiber
// only. Every fiber and the io_context share one thread (AsioScheduler), so the hub,
// the rooms and every outbox need no lock, and nothing on a fiber's path may block the
// thread: all socket I/O goes through the io_context. With --threads N there are N such
// threads, each an event loop (Loop) with its own io_context, scheduler and connections;
// a connection's fiber stays on its thread, and rooms span the threads (chat/relay.hpp).

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/fiber/condition_variable.hpp>
#include <boost/fiber/fiber.hpp>
#include <boost/fiber/mutex.hpp>
#include <boost/fiber/operations.hpp>
#include <boost/fiber/protected_fixedsize_stack.hpp>
#include <boost/intrusive/list.hpp>
#include <chat/backoff.hpp>
#include <chat/hub.hpp>
#include <chat/line_decoder.hpp>
#include <chat/linger.hpp>
#include <chat/net.hpp>
#include <chat/options.hpp>
#include <chat/outbox.hpp>
#include <chat/relay.hpp>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "asio_scheduler.hpp"
#include "yield.hpp"

namespace {

using boost::asio::ip::tcp;
using boost::system::error_code;
using chat::Outbox;
namespace bi = boost::intrusive;

constexpr std::string_view variant = "fibers";

// Stack per fiber (docs/fibers.md, "Stack size"): the deepest path measured needs under
// 8 KiB; the default doubles the minimum, which doubles that.
constexpr std::size_t default_stack_size = 32 * 1024;
constexpr std::size_t minimum_stack_size = 16 * 1024;

// Bytes read at a time. One buffer serves every connection of a thread (Loop::read_buffer_).
constexpr std::size_t read_buffer_size = 64 * 1024;
// Messages handed to one writev.
constexpr std::size_t gather_limit = 16;

// A signal handler runs on the stack the thread is on, most often a connection fiber's
// small one, where it can overflow (seen under AddressSanitizer, whose allocator is deep:
// SIGTERM in the middle of it, on a 16 KiB stack). Each thread gets an alternate stack,
// and SIGINT/SIGTERM's handler (Asio's) runs there (SA_ONSTACK).
constexpr std::size_t signal_stack_size = 64 * 1024;

void use_alternate_signal_stack() {
  stack_t present{};
  sigaltstack(nullptr, &present);
  if (!(present.ss_flags & SS_DISABLE)) return;  // one is set already (AddressSanitizer's)
  static thread_local const auto stack = std::make_unique_for_overwrite<char[]>(signal_stack_size);
  stack_t alternate{};
  alternate.ss_sp = stack.get();
  alternate.ss_size = signal_stack_size;
  sigaltstack(&alternate, nullptr);
}

// After the signal_set has installed its handler.
void run_stop_signals_on_alternate_stack() {
  for (const int signal : {SIGINT, SIGTERM}) {
    struct sigaction action{};
    sigaction(signal, nullptr, &action);
    action.sa_flags |= SA_ONSTACK;
    sigaction(signal, &action, nullptr);
  }
}

// ---- session --------------------------------------------------------------------------

// One connection. It lives on its own fiber's stack, so an idle connection costs its
// stack pages and the socket, nothing else.
struct Session : chat::Participant, bi::list_base_hook<> {
  Session(tcp::socket socket, std::size_t max_pending)
      : socket(std::move(socket)), outbox(max_pending) {}

  tcp::socket socket;
  Outbox outbox;
  boost::fibers::fiber writer;  // flushes the outbox while the peer's socket is full
  bool writing = false;         // queued for this round's writes, or `writer` is running
  bool closed = false;          // disconnected: deliver nothing more
  bool closing = false;         // in its lingering close: the writer wakes the reader when done
  // In Loop::to_write_ until this round's writes; leaves it if the session ends first.
  bi::list_member_hook<bi::link_mode<bi::auto_unlink>> to_write_hook;
};

// ---- room -----------------------------------------------------------------------------

using Cluster = chat::net::Cluster<Session>;

// One thread's event loop and what it owns: its io_context, and the room and everything
// else the thread's fibers share (the hub, the stacks, the read buffer). No locks: every
// fiber runs on this one thread; other threads reach it by posting to its io_context
// (chat/relay.hpp).
class Loop {
 public:
  Loop(std::shared_ptr<boost::asio::io_context> io, const chat::ServerOptions& options,
       std::size_t stack_size, Cluster& cluster, std::size_t thread)
      : options_(options),
        stacks_(stack_size),
        io_(std::move(io)),
        relay_(
            cluster, thread, *io_, hub_,
            [this](Session& receiver, const chat::Message& message) {
              deliver(receiver, message, Outbox::Kind::chat);
            },
            [this] { write_round(); }) {
    hub_.add_setting("stack_size", stack_size);
  }

  const std::shared_ptr<boost::asio::io_context>& io() const { return io_; }
  std::string stats() const { return hub_.stats(); }
  // Makes the calling thread this Loop's: its fibers, its io_context and its write
  // round (asio_scheduler.hpp). Call first thing on the thread.
  void use_this_thread() {
    use_alternate_signal_stack();
    fiberio::use_asio_scheduler(io_);
    fiberio::set_round_end([this] { write_round(); });
  }

  // On this thread (main fiber or a handler): a connection accepted for it; `full`: over
  // --max-clients, refuse it.
  void admit(tcp::socket socket, bool full);
  // On this thread (a handler): SIGINT/SIGTERM; drop every connection.
  void stop();
  // Returns once stop() has run and all connection fibers have ended. Runs on the main
  // fiber of this thread.
  void run();

 private:
  void serve(tcp::socket socket);
  void deliver(Session& receiver, chat::Message message, Outbox::Kind kind);
  void write_round();
  void write_now(Session& receiver);
  void flush(Session& receiver);
  std::size_t gather(Session& receiver, std::array<boost::asio::const_buffer, gather_limit>& out);
  void sent(Session& receiver, std::size_t bytes);
  void disconnect(Session& session);
  void close_lingering(Session& session, bool eof);
  void linger(tcp::socket& socket, chat::Linger& linger);
  bool discard(tcp::socket& socket, chat::Linger& linger, error_code& ec);
  void reject(tcp::socket& socket);

  const chat::ServerOptions& options_;
  boost::fibers::protected_fixedsize_stack stacks_;
  // The one read buffer of all connections. Every fiber runs on this thread, and a fiber
  // never suspends between reading into it and having handled every line read (deliver
  // never suspends), so no two connections can use it at once; the decoder copies an
  // unfinished line out. An idle connection thus holds no read buffer, on its stack or
  // anywhere: it waits for readability first, and reads only then.
  std::array<char, read_buffer_size> read_buffer_;
  std::shared_ptr<boost::asio::io_context> io_;
  chat::net::Relay<Session>::Hub hub_{variant};
  chat::net::Relay<Session> relay_;  // rooms and /stats across threads
  // Receivers delivered to since the last write_round(), each written once per round (at
  // the scheduler's round end).
  bi::list<Session,
           bi::member_hook<Session, decltype(Session::to_write_hook), &Session::to_write_hook>,
           bi::constant_time_size<false>>
      to_write_;
  boost::intrusive::list<Session> sessions_;  // to close them all on shutdown
  std::size_t connection_fibers_ = 0;         // started and not yet ended
  boost::fibers::mutex ended_mutex_;
  boost::fibers::condition_variable ended_;  // a connection fiber ended
  bool stopping_ = false;
};

// ---- deliver --------------------------------------------------------------------------

// Queues `message` for `receiver`. Runs on the sender's fiber, often inside
// hub_.handle() while it walks a room, so it never suspends: an idle receiver is written
// at the end of the scheduler's round (write_round), once every fiber that was ready has
// run, so what several senders sent it meanwhile goes out in one writev. Lines relayed
// from another thread, which a handler delivers while the io_context has its turn, wait
// for the fibers that turn makes ready in the same way.
void Loop::deliver(Session& receiver, chat::Message message, Outbox::Kind kind) {
  if (receiver.closed) return;
  if (!receiver.outbox.push(std::move(message), kind)) {
    ++hub_.counters().slow_disconnects;  // over --max-pending
    return disconnect(receiver);
  }
  if (receiver.writing) return;  // a write is due or under way: it takes this message too
  receiver.writing = true;
  to_write_.push_back(receiver);
}

// The scheduler's round end, on its dispatcher: never suspends. Once per round, as
// chat-asio's posted write step (and between two relayed batches, chat/relay.hpp).
void Loop::write_round() {
  relay_.hand_over();  // what this round relayed goes to the other threads before any reply
  while (!to_write_.empty()) {
    Session& receiver = to_write_.front();
    to_write_.pop_front();
    write_now(receiver);
  }
}

// Writes into the receiver's socket buffer, without waiting, as much as it has room for
// (from write_round(), or from the receiver's own fiber as it ends). What does not fit
// goes to a writer fiber of the receiver's own, which waits (up to --write-timeout-ms
// per byte of progress), so a slow receiver costs the senders nothing and the others no
// delay.
void Loop::write_now(Session& receiver) {
  std::array<boost::asio::const_buffer, gather_limit> buffers;
  while (!receiver.outbox.empty() && !receiver.closed) {
    const std::size_t count = gather(receiver, buffers);
    error_code ec;
    sent(receiver, receiver.socket.write_some(std::span(buffers.data(), count), ec));
    if (ec == boost::asio::error::would_block) break;
    if (ec) disconnect(receiver);
  }
  if (receiver.outbox.empty() || receiver.closed) {
    receiver.writing = false;
    return;
  }
  try {
    // A previous writer fiber set writing = false as its last step and has ended
    // since (nothing after it suspends): this join() returns at once.
    if (receiver.writer.joinable()) receiver.writer.join();
    receiver.writer =
        boost::fibers::fiber(std::allocator_arg, stacks_, [this, &receiver] { flush(receiver); });
  } catch (const std::exception&) {
    receiver.writing = false;
    disconnect(receiver);  // no memory for a stack: this receiver cannot be served
  }
}

// The writer fiber: writes until the outbox is empty or the receiver is gone.
void Loop::flush(Session& receiver) {
  std::array<boost::asio::const_buffer, gather_limit> buffers;
  while (!receiver.outbox.empty() && !receiver.closed) {
    const std::size_t count = gather(receiver, buffers);
    error_code ec;
    sent(receiver, receiver.socket.async_write_some(
                       std::span(buffers.data(), count),
                       fiberio::yield.with_timeout(options_.write_timeout)[ec]));
    if (ec == boost::asio::error::timed_out) {
      ++hub_.counters().slow_disconnects;
      if (receiver.closing) {  // give up on the output, but still close lingering
        receiver.outbox.clear();
        break;
      }
    }
    if (ec) disconnect(receiver);
  }
  receiver.writing = false;
  error_code ignored;
  if (receiver.closing && !receiver.closed) receiver.socket.cancel(ignored);  // wake the reader
}

std::size_t Loop::gather(Session& receiver,
                           std::array<boost::asio::const_buffer, gather_limit>& out) {
  std::array<std::string_view, gather_limit> views;
  const std::size_t count = receiver.outbox.gather(views);
  for (std::size_t i = 0; i < count; ++i) out[i] = boost::asio::buffer(views[i]);
  return count;
}

void Loop::sent(Session& receiver, std::size_t bytes) {
  if (receiver.closed || bytes == 0) return;
  hub_.counters().bytes_out += bytes;
  hub_.counters().lines_out += receiver.outbox.consume(bytes);
}

// Drops the connection: the reader's pending read and the writer's pending write end
// with operation_aborted, and each fiber then winds down.
void Loop::disconnect(Session& session) {
  if (session.closed) return;
  session.closed = true;
  error_code ignored;
  session.socket.close(ignored);  // first: no write may still use the messages cleared next
  session.outbox.clear();
}

// ---- connection fiber -----------------------------------------------------------------

// The connection's fiber: read a line, relay it, loop.
void Loop::serve(tcp::socket socket) {
  Session session(std::move(socket), options_.max_pending);
  error_code ec;
  session.socket.non_blocking(true, ec);  // read_some(), write_now(): never block the thread
  session.socket.set_option(tcp::no_delay(true), ec);  // a chat line goes out at once
  sessions_.push_back(session);
  hub_.enter(session);
  if (stopping_) disconnect(session);  // accepted just before the signal

  chat::LineDecoder decoder(options_.max_line);
  bool quit = false;  // /quit or a line too long: close once the output is written
  bool eof = false;   // the peer has nothing more to send; it may still be reading
  while (!quit && !session.closed) {
    session.socket.async_wait(tcp::socket::wait_read, fiberio::yield[ec]);
    if (ec) break;
    if (!relay_.may_read()) {  // too much on its way to another thread (chat/relay.hpp)
      relay_.wait_for_credit(fiberio::yield[ec]);
      continue;
    }
    relay_.catch_up();  // lines relayed from other threads first, EOF too (chat/relay.hpp)
    const std::size_t n = session.socket.read_some(boost::asio::buffer(read_buffer_), ec);
    if (ec == boost::asio::error::would_block) continue;
    eof = ec == boost::asio::error::eof;
    if (ec) break;
    hub_.counters().bytes_in += n;
    const auto status = decoder.feed({read_buffer_.data(), n}, [&](std::string_view line) {
      auto outcome = hub_.handle(session, line, [this](Session& receiver, const chat::Message& m) {
        deliver(receiver, m, Outbox::Kind::chat);
      });
      if (outcome.reply) deliver(session, std::move(outcome.reply), Outbox::Kind::reply);
      quit = outcome.quit;
      return !quit && !session.closed;
    });
    if (status == chat::LineDecoder::Status::line_too_long) {
      deliver(session, chat::replies::line_too_long(), Outbox::Kind::reply);
      quit = true;
    }
  }

  hub_.exit(session);              // it receives nothing more
  if (quit || eof) close_lingering(session, eof);
  disconnect(session);  // a reset (what is queued is dropped), or the close is over
  session.to_write_hook.unlink();
  if (session.writer.joinable()) session.writer.join();  // it uses this fiber's `session`
  sessions_.erase(sessions_.iterator_to(session));
  {
    std::lock_guard lock(ended_mutex_);
    --connection_fibers_;
  }
  ended_.notify_all();
}

// /quit or a line too long: the lingering close (chat/linger.hpp). This fiber reads and
// discards while the writer (if any) writes what is queued; the writer cancels the read
// wait when it is done. Then FIN, then discard until EOF, the deadline or --linger-bytes.
// After the peer's EOF (`eof`) only the writing is left: there is nothing to read.
void Loop::close_lingering(Session& session, bool eof) {
  ++hub_.counters().lingering;
  chat::Linger policy(options_);
  session.closing = true;
  if (session.to_write_hook.is_linked()) {  // its write is due this round: do it now
    session.to_write_hook.unlink();
    write_now(session);
  }
  error_code ec;
  bool reading = !eof;  // until EOF: a socket at EOF is always readable
  while (session.writing && !session.closed && reading) {
    session.socket.async_wait(tcp::socket::wait_read, fiberio::yield[ec]);
    if (ec == boost::asio::error::operation_aborted) continue;  // the writer is done
    reading = !ec && discard(session.socket, policy, ec);
  }
  if (session.writer.joinable()) session.writer.join();  // at once, unless the peer sent EOF
  if (!session.closed && reading) linger(session.socket, policy);
  --hub_.counters().lingering;
}

// FIN, then read and discard until EOF, the deadline or --linger-bytes.
void Loop::linger(tcp::socket& socket, chat::Linger& policy) {
  error_code ec;
  socket.shutdown(tcp::socket::shutdown_send, ec);
  policy.drained(chat::Linger::Clock::now());
  do {
    socket.async_wait(tcp::socket::wait_read,
                      fiberio::yield.with_timeout(policy.deadline() - chat::Linger::Clock::now())[ec]);
  } while (!ec && discard(socket, policy, ec));
}

// One read of input nobody will handle. false: stop reading (EOF, error, or the policy
// says close).
bool Loop::discard(tcp::socket& socket, chat::Linger& policy, error_code& ec) {
  const std::size_t n = socket.read_some(boost::asio::buffer(read_buffer_), ec);
  if (ec == boost::asio::error::would_block) return true;
  if (ec) return false;
  hub_.counters().bytes_in += n;
  return policy.discarded(n, chat::Linger::Clock::now());
}

// ---- accept loop ----------------------------------------------------------------------

void Loop::run() {
  std::unique_lock lock(ended_mutex_);
  ended_.wait(lock, [this] { return stopping_ && connection_fibers_ == 0; });
  fiberio::set_round_end({});  // the scheduler outlives this Loop (on the main thread)
}

void Loop::admit(tcp::socket socket, bool full) {
  if (full) {
    reject(socket);
    return;
  }
  try {
    boost::fibers::fiber(std::allocator_arg, stacks_,
                         [this, socket = std::move(socket)]() mutable { serve(std::move(socket)); })
        .detach();
    ++connection_fibers_;
  } catch (const std::exception&) {
    ++hub_.counters().rejected;  // no memory for a stack; the socket went with the fiber
  }
}

// /error server-full, then a short lingering close (Linger::refused_linger) on a fiber of
// its own; with no stack to spare for one, close at once. The socket is fresh, so its
// buffer takes the reply.
void Loop::reject(tcp::socket& socket) {
  error_code ec;
  socket.non_blocking(true, ec);
  hub_.counters().bytes_out += socket.write_some(boost::asio::buffer(*chat::replies::server_full()), ec);
  ++hub_.counters().rejected;
  try {
    boost::fibers::fiber(std::allocator_arg, stacks_, [this, socket = std::move(socket)]() mutable {
      ++hub_.counters().lingering;
      chat::Linger policy(options_, true);
      if (!stopping_) linger(socket, policy);
      --hub_.counters().lingering;
      error_code ignored;
      socket.close(ignored);
      {
        std::lock_guard lock(ended_mutex_);
        --connection_fibers_;
      }
      ended_.notify_all();
    }).detach();
    ++connection_fibers_;  // run() waits for it too (100 ms at most)
  } catch (const std::exception&) {
    socket.close(ec);
  }
}

void Loop::stop() {
  stopping_ = true;
  for (Session& session : sessions_) disconnect(session);
  relay_.wake();  // fibers waiting for credit
  ended_.notify_all();  // run() waits for stopping_ too; no fiber holds the mutex now
}

// The server: one Loop per thread, the listening socket on the first, and the
// round-robin hand-over of what it accepts. Its accept loop runs on the first thread's
// main fiber until SIGINT or SIGTERM; then it stops every Loop.
class Server {
 public:
  Server(const chat::ServerOptions& options, std::size_t stack_size)
      : options_(options),
        cluster_(options.threads),
        loops_(make_loops(stack_size)),
        acceptor_(chat::net::listen<tcp::acceptor>(*loops_[0]->io(), options)),
        signals_(*loops_[0]->io(), SIGINT, SIGTERM),
        backoff_timer_(*loops_[0]->io()) {
    loops_[0]->use_this_thread();
    run_stop_signals_on_alternate_stack();
  }

  // Runs every Loop until shutdown: the first on the calling thread, whose main fiber
  // accepts; each other on a thread of its own.
  void run() {
    std::vector<std::jthread> others;
    for (std::size_t t = 1; t < loops_.size(); ++t) {
      others.emplace_back([&loop = *loops_[t]] {
        loop.use_this_thread();
        loop.run();
      });
    }
    chat::announce_listening(options_.bind, acceptor_.local_endpoint().port(), variant);
    accept();
    loops_[0]->run();
    others.clear();  // joined
    // This thread's fiber scheduler outlives the Loops (it ends with the thread), and it
    // shares this io_context: nothing still posted to it (a relay handler) may run now.
    loops_[0]->io()->stop();
  }
  // Once run() has returned: the final counters, every thread's.
  std::string stats() const { return loops_[0]->stats(); }

 private:
  // One io_context and fiber scheduler per thread; all outlive every thread (the others
  // post to them until they end).
  std::vector<std::unique_ptr<Loop>> make_loops(std::size_t stack_size) {
    std::vector<std::unique_ptr<Loop>> loops;
    for (std::size_t t = 0; t < options_.threads; ++t) {
      loops.push_back(std::make_unique<Loop>(std::make_shared<boost::asio::io_context>(1), options_,
                                             stack_size, cluster_, t));
    }
    return loops;
  }

  // Each connection straight onto the io_context of the next Loop, round-robin.
  void accept() {
    signals_.async_wait([this](error_code ec, int) {
      if (!ec) shutdown();
    });
    chat::Backoff backoff;
    while (!stopping_) {
      Loop& next = *loops_[next_];
      error_code ec;
      tcp::socket socket = acceptor_.async_accept(*next.io(), fiberio::yield[ec]);
      if (ec) {
        if (chat::is_resource_exhaustion(ec.value())) {
          // Out of descriptors: wait (the timer, not a spin), serving everyone meanwhile.
          backoff_timer_.expires_after(backoff.next());
          backoff_timer_.async_wait(fiberio::yield[ec]);
        }
        continue;  // a peer that gave up (ECONNABORTED), or the signal closed the acceptor
      }
      backoff.reset();
      hand_over(next, std::move(socket));
      next_ = (next_ + 1) % loops_.size();
    }
  }

  // --max-clients is decided here, on every thread's count (Cluster::held), and carried
  // out on the connection's own thread.
  void hand_over(Loop& loop, tcp::socket socket) {
    const bool full = options_.max_clients != 0 && cluster_.held() >= options_.max_clients;
    if (&loop == loops_[0].get()) return loop.admit(std::move(socket), full);
    cluster_.sent_to_thread();
    boost::asio::post(*loop.io(), [this, &loop, full, socket = std::move(socket)]() mutable {
      loop.admit(std::move(socket), full);
      cluster_.arrived_on_thread();
    });
  }

  // SIGINT/SIGTERM (a handler on the dispatcher): stop accepting, drop every connection.
  void shutdown() {
    stopping_ = true;
    error_code ignored;
    acceptor_.close(ignored);
    backoff_timer_.cancel();
    for (auto& loop : loops_) boost::asio::post(*loop->io(), [&one = *loop] { one.stop(); });
  }

  const chat::ServerOptions options_;
  Cluster cluster_;
  std::vector<std::unique_ptr<Loop>> loops_;
  tcp::acceptor acceptor_;  // on the first Loop
  boost::asio::signal_set signals_;
  boost::asio::steady_timer backoff_timer_;
  bool stopping_ = false;
  std::size_t next_ = 0;  // the Loop the next connection goes to
};

}  // namespace

// ---- main -----------------------------------------------------------------------------

int main(int argc, char** argv) {
  // Whole pages (add_stack_size_option rounds up): the guard page below a stack must
  // start on a page boundary.
  std::size_t stack_size = default_stack_size;
  std::size_t thread_count = 1;
  chat::ServerOptions options =
      chat::parse_server_options(argc, argv, variant, [&](CLI::App& app) {
        chat::add_stack_size_option(app, stack_size, minimum_stack_size,
                                    "default 32K (docs/fibers.md, \"Stack size\")");
        chat::add_threads_option(app, thread_count);
      });
  options.threads = thread_count;
  try {
    Server server(options, stack_size);
    server.run();
    std::cerr << server.stats() << std::endl;
  } catch (const std::exception& e) {  // e.g. the address is taken
    std::cerr << "chat-fibers: " << e.what() << '\n';
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
