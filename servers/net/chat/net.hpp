#pragma once
// Asio glue that does not depend on how a variant waits: opening the listener, writing
// what an outbox owes with one non-blocking writev, refusing a client. The variants differ
// only in how they wait (completion callbacks, coroutines, fibers); these steps never wait.

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <chrono>
#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "chat/counters.hpp"
#include "chat/linger.hpp"
#include "chat/message.hpp"
#include "chat/options.hpp"
#include "chat/outbox.hpp"
#include "chatbench/owned_count.hpp"

namespace chat::net {

namespace asio = boost::asio;

// I/O objects bound to the io_context's own executor rather than any_io_executor: 8 bytes
// each instead of several words, and one connection holds a socket and a timer.
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<asio::ip::tcp, Executor>;
using Acceptor = asio::basic_socket_acceptor<asio::ip::tcp, Executor>;
using Timer = asio::basic_waitable_timer<std::chrono::steady_clock,
                                         asio::wait_traits<std::chrono::steady_clock>, Executor>;
using Clock = std::chrono::steady_clock;
// One thread's counters: it alone writes them, /stats reads every thread's.
using chatbench::OwnedCount;
using Counts = Counters<OwnedCount>;

// The first I/O object of an io_context sets up its backend. On Asio's io_uring backend
// (chat-asio-uring, chat-coro-uring) that is the ring, whose failure is no fault of the
// address: IoUringUnavailable says so, rather than "cannot listen on ...: Function not
// implemented". Elsewhere (epoll) a failure is a ListenError.
template <class A>
A first_io_object(asio::io_context& io, [[maybe_unused]] const ServerOptions& options) {
  try {
    return A(io.get_executor());
  } catch (const boost::system::system_error& error) {
#if defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
    throw IoUringUnavailable(error.code().value());
#else
    throw ListenError(options, error.code().message());
#endif
  }
}

// Binds and listens with a deep backlog (a burst of thousands of connects must not be
// dropped while the accept loop catches up). Throws ListenError, which names the address
// and the reason without Asio's source location (or IoUringUnavailable, above). An
// acceptor type of the variant's own (e.g. on any_io_executor) can be asked for.
template <class A = Acceptor>
A listen(asio::io_context& io, const ServerOptions& options) {
  A acceptor = first_io_object<A>(io, options);
  try {
    const asio::ip::tcp::endpoint endpoint(asio::ip::make_address(options.bind), options.port);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
    return acceptor;
  } catch (const boost::system::system_error& error) {
    throw ListenError(options, error.code().message());
  }
}

// The one "listening on" line; print it only once signals are handled and the accept
// loop runs, since whoever reads it may connect or send SIGTERM at once.
inline void announce(const Acceptor& acceptor, std::string_view variant) {
  const auto local = acceptor.local_endpoint();
  announce_listening(local.address().to_string(), local.port(), variant);
}

// Sockets are non-blocking for the program's own calls: a read or write that cannot go
// on returns would_block, and the variant waits for readiness its own way. That way no
// buffer is tied to a connection while it waits (see write_queued and the read steps).
// And no Nagle delay: lines are small, and latency is part of what is measured.
inline void prepare(Socket& socket) {
  socket.non_blocking(true);
  boost::system::error_code ignored;  // a peer already gone shows up at the first read
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
}

// Writes what `outbox` owes without waiting: one writev of everything queued (up to
// kMaxBuffers messages each; more writevs only if that many are queued and the socket
// takes them all). Counts bytes_out and the chat lines it completed (lines_out). Returns
// would_block if the socket took nothing; the caller waits for writability while
// !outbox.empty().
inline boost::system::error_code write_queued(Socket& socket, Outbox& outbox, Counts& counts) {
  // Scratch shared by every connection on the thread: a write never waits holding it.
  constexpr std::size_t kMaxBuffers = 256;  // under IOV_MAX (1024)
  thread_local std::array<std::string_view, kMaxBuffers> views;
  thread_local std::array<asio::const_buffer, kMaxBuffers> buffers;
  bool wrote = false;
  while (!outbox.empty()) {
    const std::size_t count = outbox.gather(views);
    std::size_t offered = 0;
    for (std::size_t i = 0; i < count; ++i) {
      buffers[i] = asio::buffer(views[i]);
      offered += views[i].size();
    }
    boost::system::error_code error;
    const std::size_t written =
        socket.write_some(std::span<const asio::const_buffer>(buffers.data(), count), error);
    if (error) return wrote && error == asio::error::would_block ? boost::system::error_code{} : error;
    wrote = true;
    counts.bytes_out += written;
    counts.lines_out += outbox.consume(written);
    if (written < offered) break;  // the socket is full: wait for writability
  }
  return {};
}

// How often a variant that sweeps its sessions for the write timeout does so: a tenth of
// the timeout, so a stalled receiver is disconnected at most 10% late.
inline std::chrono::milliseconds sweep_interval(const ServerOptions& options) {
  return std::max(options.write_timeout / 10, std::chrono::milliseconds(1));
}

// A connection whose close is decided (chat/linger.hpp): it takes over the socket and what
// is still queued for it, and drives the lingering close on its own timer, outside any
// room. Counted in `lingering` from construction to close. Written with completion
// callbacks, which both Asio variants can run: it never waits on anything but its own
// socket and timer, so how the variant waits elsewhere does not matter here.
using CloserHook =
    boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

class Closer : public CloserHook, public std::enable_shared_from_this<Closer> {
 public:
  // `eof`: the peer already ended its stream (read nothing more).
  Closer(Socket socket, Outbox outbox, const ServerOptions& options, Counts& counts,
         bool refused = false, bool eof = false)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        outbox_(std::move(outbox)),
        linger_(options, refused),
        write_timeout_(options.write_timeout),
        counts_(counts),
        eof_(eof) {
    ++counts_.lingering;
  }

  void start() {
    progress_ = Clock::now();
    if (!eof_) read();
    write();
  }

  // Closes at once (shutdown, or the peer is gone); the pending waits end aborted.
  void close() {
    if (closed_) return;
    closed_ = true;
    --counts_.lingering;
    boost::system::error_code ignored;
    socket_.close(ignored);
    timer_.cancel();
    outbox_.clear();
    unlink();
  }

 private:
  void read() {
    socket_.async_wait(Socket::wait_read, [self = shared_from_this()](boost::system::error_code error) {
      if (!error) self->on_readable();
    });
  }

  void on_readable() {
    if (closed_) return;
    thread_local std::array<char, 16 * 1024> discard;
    boost::system::error_code error;
    const std::size_t size = socket_.read_some(asio::buffer(discard), error);
    if (error == asio::error::would_block) return read();
    if (error == asio::error::eof) {
      eof_ = true;
      if (linger_.lingering()) close();  // all done: the peer has read its FIN
      return;                            // else close once drained
    }
    if (error) return close();  // reset: nothing more can reach the peer
    counts_.bytes_in += size;
    if (!linger_.discarded(size, Clock::now())) return close();
    read();
  }

  void write() {
    if (closed_ || linger_.lingering()) return;
    const auto error = write_queued(socket_, outbox_, counts_);
    if (error && error != asio::error::would_block) return close();  // the peer is gone
    const auto now = Clock::now();
    if (!error) progress_ = now;
    if (outbox_.empty()) return drained(now);
    socket_.async_wait(Socket::wait_write, [self = shared_from_this()](boost::system::error_code error) {
      if (!error) self->write();
    });
    arm(progress_ + write_timeout_);
  }

  // Output written, or given up on: FIN after it, then the linger deadline.
  void drained(Clock::time_point now) {
    if (eof_) return close();
    boost::system::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    linger_.drained(now);
    arm(linger_.deadline());
  }

  void arm(Clock::time_point when) {
    timer_.expires_at(when);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code error) {
      if (!error) self->on_timer();
    });
  }

  void on_timer() {
    if (closed_) return;
    const auto now = Clock::now();
    if (linger_.lingering()) return close();  // the deadline
    if (now - progress_ < write_timeout_) return arm(progress_ + write_timeout_);
    ++counts_.slow_disconnects;  // the write timeout gives up on the queued output
    socket_.cancel();            // the write wait ends aborted (and the read wait: resume it)
    outbox_.clear();
    drained(now);
    if (!eof_ && !closed_) read();
  }

  Socket socket_;
  Timer timer_;
  Outbox outbox_;
  Linger linger_;
  std::chrono::milliseconds write_timeout_;
  Counts& counts_;
  Clock::time_point progress_{};  // the peer last took bytes
  bool eof_ = false;
  bool closed_ = false;
};
using CloserList = boost::intrusive::list<Closer, boost::intrusive::constant_time_size<false>>;

// A client over --max-clients: tell it why, linger briefly (Linger::refused_linger), close.
// Counted in rejected.
inline void refuse(Socket socket, const ServerOptions& options, Counts& counts, CloserList& closers) {
  ++counts.rejected;
  prepare(socket);
  Outbox reply(options.max_pending);
  (void)reply.push(replies::server_full(), Outbox::Kind::reply);
  auto closer = std::make_shared<Closer>(std::move(socket), std::move(reply), options, counts, true);
  closers.push_back(*closer);
  closer->start();
}

}  // namespace chat::net
