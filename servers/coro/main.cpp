// chat-coro: the chat server on Boost.Asio C++20 coroutines (stackless), one io_context
// per thread (--threads N, default 1; rooms span the threads: chat/relay.hpp).
// The shape of Asio's cpp20 chat example: a session per connection with a reader
// coroutine and a writer coroutine, one write in flight per session, everything queued
// written by one writev.
//
// Idle memory is what this variant is judged on, so an idle session is one suspended
// reader frame and nothing else: the reader waits for readability, then reads into one
// buffer that every session shares; the writer and the write-timeout watchdog are spawned
// only while output is pending, and end when it has been written.

#include <boost/asio.hpp>
#include <csignal>
#include <memory>
#include <string_view>

#include "chat/loop.hpp"
#include "chat/net.hpp"
#include "chat/options.hpp"
#include "chat/relay.hpp"

namespace {

// "coro", or "coro-uring" for the build on Asio's io_uring backend (CMakeLists.txt).
constexpr std::string_view kVariant = CHAT_VARIANT;

namespace asio = boost::asio;
using boost::system::error_code;
using chat::net::Clock;
using chat::net::Socket;
using Executor = chat::net::Executor;
template <class T = void>
using Task = asio::awaitable<T, Executor>;
// co_await x.async_op(deferred) yields a tuple whose first element is the error_code:
// errors as values, since a closed peer is not exceptional. Deferred, not use_awaitable:
// an awaitable operation is started from the awaiting frame itself, whereas use_awaitable
// wraps each one in a coroutine frame of its own (kept for as long as it waits).
constexpr auto deferred = asio::as_tuple(asio::deferred);

class Session;
// One thread's event loop: its io_context, sessions, hub and relay (chat/loop.hpp).
using Loop = chat::net::Loop<Session>;

// ---- session: one connection; a reader and a writer coroutine (the rest: chat/loop.hpp).
class Session : public chat::net::Connection<Session> {
 public:
  using Connection::Connection;

 private:
  friend Connection;
  void begin_reading() { asio::co_spawn(socket_.get_executor(), read(shared_from_this()), asio::detached); }
  void begin_writing() { asio::co_spawn(socket_.get_executor(), write(shared_from_this()), asio::detached); }
  // Each coroutine's frame holds a copy of `self` (coroutine parameters are copied
  // into the frame, used or not), so the session lives as long as one of them runs.
  Task<> read(std::shared_ptr<Session> self);
  Task<> write(std::shared_ptr<Session> self);
};

// ---- read: wait for readability (and credit), then read what is there into the shared buffer.
Task<> Session::read(std::shared_ptr<Session> self) {
  for (;;) {
    const auto [error] = co_await socket_.async_wait(Socket::wait_read, deferred);
    if (!error && must_wait_for_credit()) {
      // Out of credit, which is rare: this reader ends and a new one starts once there is
      // credit. Awaited here, the wait would add its awaiter to every idle session's
      // frame (+64 B per connection, measured).
      loop_.relay.wait_for_credit([self](error_code) { self->begin_reading(); });
      co_return;
    }
    if (error || !on_readable()) co_return;
  }
}

// ---- write: one writev of everything queued; wait for writability if it did not all go.
Task<> Session::write(std::shared_ptr<Session> /*self*/) {
  // Write once the current step is over, so the lines it is still delivering to this
  // session go out in the same writev.
  co_await asio::post(socket_.get_executor(), deferred);
  while (!stopped_ && write_step()) {
    if (outbox_.empty()) {
      writing_ = false;
      co_return;
    }
    const auto [wait_error] = co_await socket_.async_wait(Socket::wait_write, deferred);
    if (wait_error) co_return;
  }
}

// ---- one thread's write-timeout sweep (the timer of chat/loop.hpp): a stalled receiver
// goes at most a tenth of --write-timeout-ms late.
Task<> sweep(Loop& loop) {
  for (;;) {
    loop.sweep_timer.expires_after(chat::net::sweep_interval(loop.options));
    const auto [error] = co_await loop.sweep_timer.async_wait(deferred);
    // Shut down; or stop() found the timer already expired, its completion queued.
    if (error || loop.stopped) co_return;
    const auto now = Clock::now();
    for (Session& session : loop.sessions) session.check_write_timeout(now);
  }
}

// ---- accept loop and shutdown on SIGINT/SIGTERM, on the first thread (the rest:
// chat/loop.hpp).
class Server : public chat::net::Server<Session> {
 public:
  Server(const chat::ServerOptions& options)
      : chat::net::Server<Session>(options, kVariant), signals_(loops_[0]->io, SIGINT, SIGTERM) {
    for (auto& loop : loops_) asio::co_spawn(loop->io, sweep(*loop), asio::detached);
    asio::co_spawn(loops_[0]->io, wait_for_signal(), asio::detached);
    asio::co_spawn(loops_[0]->io, accept(), asio::detached);
    chat::net::announce(acceptor_, kVariant);
  }

 private:
  Task<> wait_for_signal() {
    const auto [error, number] = co_await signals_.async_wait(deferred);
    if (!error) shutdown();
  }

  Task<> accept() {
    for (;;) {
      auto [error, socket] = co_await acceptor_.async_accept(next().io, deferred);
      if (!acceptor_.is_open()) co_return;  // shut down
      if (error && chat::is_resource_exhaustion(error.value())) {
        // accept() would fail again at once: wait, keep serving, then try again.
        backoff_timer_.expires_after(backoff_.next());
        const auto [wait_error] = co_await backoff_timer_.async_wait(deferred);
        if (wait_error) co_return;
        continue;
      }
      if (!error) {
        backoff_.reset();
        hand_over(std::move(socket));
      }
      // other errors (e.g. the peer aborted) belong to that connection only
    }
  }

  asio::basic_signal_set<Executor> signals_;
};

}  // namespace

// ---- main: the options, the server, its final counters (chat/loop.hpp).
int main(int argc, char** argv) { return chat::net::main<Server>(argc, argv, kVariant); }
