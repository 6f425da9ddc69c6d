#pragma once
// Asio glue that does not depend on how a variant waits: opening the listener, writing
// what an outbox owes with one non-blocking writev, refusing a client. The variants differ
// only in how they wait (completion callbacks, coroutines, fibers); these steps never wait.

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>

#include "chat/counters.hpp"
#include "chat/message.hpp"
#include "chat/options.hpp"
#include "chat/outbox.hpp"

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
using Counts = Counters<std::uint64_t>;

// Binds and listens with a deep backlog (a burst of thousands of connects must not be
// dropped while the accept loop catches up). Throws ListenError, which names the address
// and the reason without Asio's source location. An acceptor type of the variant's own
// (e.g. on any_io_executor) can be asked for.
template <class A = Acceptor>
A listen(asio::io_context& io, const ServerOptions& options) {
  try {
    const asio::ip::tcp::endpoint endpoint(asio::ip::make_address(options.bind), options.port);
    A acceptor(io.get_executor(), endpoint.protocol());
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

// A client over --max-clients: tell it why, best effort, and close it. Counted in rejected.
inline void refuse(Socket& socket, Counts& counts) {
  boost::system::error_code ignored;
  socket.non_blocking(true);
  counts.bytes_out += socket.write_some(asio::buffer(*replies::server_full()), ignored);
  socket.close(ignored);
  ++counts.rejected;
}

}  // namespace chat::net
