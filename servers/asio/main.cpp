// chat-asio: the chat server on Boost.Asio completion callbacks, one io_context per thread
// (--threads N, default 1; rooms span the threads: chat/relay.hpp).
// The shape of Asio's chat example: a session per connection with a read step and a write
// step, one write in flight per session, everything queued written by one writev.
//
// Idle memory is what this variant is judged on, so an idle session owns no buffer and no
// pending timer: it waits for readability, then reads into one buffer that every session
// shares; its write-timeout timer runs only while output is pending.

#include <boost/asio.hpp>
#include <csignal>
#include <memory>
#include <string_view>

#include "chat/loop.hpp"
#include "chat/net.hpp"
#include "chat/options.hpp"
#include "chat/relay.hpp"

namespace {

// "asio", or "asio-uring" for the build on Asio's io_uring backend (CMakeLists.txt).
constexpr std::string_view kVariant = CHAT_VARIANT;

namespace asio = boost::asio;
using boost::system::error_code;
using chat::net::Clock;
using chat::net::Socket;

class Session;
// One thread's event loop: its io_context, sessions, hub and relay (chat/loop.hpp).
using Loop = chat::net::Loop<Session>;

// ---- session: one connection; a read step and a write step (the rest: chat/loop.hpp).
class Session : public chat::net::Connection<Session> {
 public:
  using Connection::Connection;

 private:
  friend Connection;
  void begin_reading() { read(); }
  // Write once the current step is over, so the lines it is still delivering to this
  // session go out in the same writev.
  void begin_writing() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->write(); });
  }
  void read();
  void write();
};

// ---- read: wait for readability (and credit), then read what is there into the shared buffer.
void Session::read() {
  socket_.async_wait(Socket::wait_read, [self = shared_from_this()](error_code error) {
    if (error) return;
    if (self->must_wait_for_credit()) {
      return self->loop_.relay.wait_for_credit([self](error_code) { self->read(); });
    }
    if (self->on_readable()) self->read();
  });
}

// ---- write: one writev of everything queued; wait for writability if it did not all go.
void Session::write() {
  if (stopped_ || !write_step()) return;
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
void sweep(Loop& loop) {
  loop.sweep_timer.expires_after(chat::net::sweep_interval(loop.options));
  loop.sweep_timer.async_wait([&loop](error_code error) {
    // Shut down; or stop() found the timer already expired, its completion queued.
    if (error || loop.stopped) return;
    const auto now = Clock::now();
    for (Session& session : loop.sessions) session.check_write_timeout(now);
    sweep(loop);
  });
}

// ---- accept loop and shutdown on SIGINT/SIGTERM, on the first thread (the rest:
// chat/loop.hpp).
class Server : public chat::net::Server<Session> {
 public:
  Server(const chat::ServerOptions& options)
      : chat::net::Server<Session>(options, kVariant), signals_(loops_[0]->io, SIGINT, SIGTERM) {
    for (auto& loop : loops_) sweep(*loop);
    signals_.async_wait([this](error_code error, int) {
      if (!error) shutdown();
    });
    accept();
    chat::net::announce(acceptor_, kVariant);
  }

 private:
  void accept() {
    acceptor_.async_accept(next().io, [this](error_code error, Socket socket) {
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
        hand_over(std::move(socket));
      }
      accept();  // other errors (e.g. the peer aborted) belong to that connection only
    });
  }

  asio::signal_set signals_;
};

}  // namespace

// ---- main: the options, the server, its final counters (chat/loop.hpp).
int main(int argc, char** argv) { return chat::net::main<Server>(argc, argv, kVariant); }
