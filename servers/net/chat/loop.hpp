#pragma once
// One thread of a server on Asio (chat-asio, chat-coro): its io_context and what its
// sessions share, their admission and their shutdown. Only that thread touches it, so
// nothing here is locked; other threads reach it by posting to `io` (chat/relay.hpp).
// What differs between the variants (the sessions' read and write steps, the sweep that
// drives check_write_timeout) stays in each main.cpp.
//
// Session: constructed from (Loop&, Socket), then start(); stop() closes it at once;
// deliver(message, Outbox::Kind); derives from SessionHook.

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/intrusive/list.hpp>
#include <cstddef>
#include <memory>
#include <string_view>
#include <utility>

#include "chat/net.hpp"
#include "chat/options.hpp"
#include "chat/outbox.hpp"
#include "chat/relay.hpp"

namespace chat::net {

// Every open session of a thread, for shutdown; a session unlinks itself when destroyed.
using SessionHook = boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

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

}  // namespace chat::net
