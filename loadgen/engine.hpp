// The connection engine: worker threads, each owning its connections and its counters
// (the wrk shape: nothing shared on the hot path). The main thread drives phases by
// posting work to every worker, polling their counters, and adding up what they own with
// Engine::reduce.
//
// Worker holds what is the same for every I/O model: the connections, the connect pacing,
// the engine's own counters, and the protocol's side of each connection through the
// engine's Wire (wire.hpp): its handshake on connecting, its decoder on every read. What a
// scenario counts is the scenario's (scenario_common.hpp). An engine per I/O model derives from it and does the I/O:
// engine_epoll.cpp (Asio on epoll, a system call per operation) and engine_uring.cpp
// (io_uring, one submission per wake-up). The scenarios see only Worker.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "chatbench/owned_count.hpp"
#include "metrics.hpp"
#include "options.hpp"
#include "wire.hpp"

namespace loadgen {

// A worker's tallies: written by its thread only, read by the main thread.
using chatbench::OwnedCount;

enum class ConnectionState { connecting, open, closed, failed };

// One client. Each engine derives its own with the socket it needs.
struct Connection {
  explicit Connection(std::uint32_t client_id) : id(client_id) {}
  virtual ~Connection() = default;

  std::uint32_t id;  // global client index, 0..clients-1
  ConnectionState state = ConnectionState::connecting;
  std::string partial;  // the start of a line (a broker's frame) not yet complete
  std::string queued;   // output waiting for the write in flight
  std::string writing;  // output of the write in flight; empty: no write in flight

  // The traffic modes' state of this client (broadcast, chat), kept here rather than in a
  // table of the scenario's, which would cost a lookup per line received.
  bool joined = false;  // chat: got "/joined"; broadcast: got a sync line
  // Sender side (chat: every joined client; broadcast: client 0 only).
  bool sender = false;     // sends in this run
  std::uint64_t sent = 0;  // lines handed to the socket, also the next sequence number

  // Receiver side: one track per possible sender, the senders of this client's room.
  std::uint32_t track_base = 0;
  std::vector<SenderTrack> tracks;
};

class Engine;

// The messages the wire decodes from a connection's bytes come back to its worker, which
// keeps what the engine itself answers to (a server that is full, an error, a NATS PING, a
// Redis copy of a client's own line) and hands the rest to the scenario's handler.
class Worker : private MessageSink {
 public:
  // A message received on a connection (a chat line without its LF, or a reply), with the
  // time of the read.
  using MessageHandler = std::function<void(Connection&, const Message&, std::int64_t now_ns)>;

  Worker(Engine& engine, unsigned index);
  virtual ~Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  unsigned index() const { return index_; }

  // From any thread: run fn on this worker's thread, soon.
  virtual void post(std::function<void()> fn) = 0;
  // Run fn on this worker's thread and wait until it has run.
  void call(const std::function<void()>& fn);
  // Stop the thread (after close_all); the engine calls it before destroying the worker.
  virtual void stop() = 0;

  // The rest runs on the worker thread.
  // Open connections for these client ids, a bounded number in flight.
  void start_connects(std::vector<std::uint32_t> ids);
  // Give up on connects still in flight (the phase deadline passed).
  void abort_connects();
  // Queue bytes for a connection; false if it is not open. Queued bytes go out in order.
  bool send(Connection& connection, std::string_view bytes);
  void close(Connection& connection);
  // The end of the run: every connection ends with a reset (SO_LINGER 0), so none is left
  // in TIME_WAIT on either side to skew the next measurement's memory.
  void close_all();
  // The worker's one timer: fn runs once the steady clock reaches when_ns. Setting it
  // again replaces it; the scenarios multiplex their schedules onto it.
  virtual void set_timer(std::int64_t when_ns, std::function<void()> fn) = 0;
  virtual void cancel_timer() = 0;

  std::vector<std::unique_ptr<Connection>>& connections() { return connections_; }
  Connection* find(std::uint32_t id);
  void set_message_handler(MessageHandler handler) { message_handler_ = std::move(handler); }
  // The protocol the connections speak.
  const Wire& wire() const { return wire_; }

  // Read by the main thread while the worker runs.
  OwnedCount connects_pending;  // queued or in flight
  OwnedCount connected;         // ever reached the open state
  OwnedCount closed;            // open connections that closed since (server or error)
  // Read through Engine::reduce.
  std::uint64_t untimed_reads = 0;  // reads without a kernel receive time (timed at the read)
  std::uint64_t own_copies = 0;     // chat lines the server handed back to their sender (Reply::own_line)

 protected:
  // What an engine implements. A connect that completes calls on_connected; bytes read
  // go to on_bytes; a write that completes with more queued calls start_write again.
  virtual std::unique_ptr<Connection> make_connection(std::uint32_t id) = 0;
  // Start connecting fd (a fresh, bound TCP socket the connection now owns).
  virtual void begin_connect(Connection& connection, int fd) = 0;
  // The connection is open: start reading.
  virtual void on_open(Connection& connection) = 0;
  // Send connection.writing (swapped in from queued by the caller).
  virtual void start_write(Connection& connection) = 0;
  // Close the socket and give up whatever is in flight on it; idempotent. reset: SO_LINGER 0.
  virtual void release(Connection& connection, bool reset) = 0;

  // Receive times come from the kernel (docs/loadgen.md, "The tick and receive times"):
  // when a line reached the socket, not when this thread got round to reading it. The
  // kernel stamps CLOCK_REALTIME; lines carry the steady clock. sync_clocks() before each
  // batch of reads takes the offset between the two; receive_time() maps a read's control
  // messages (the first, and a function to the next) onto the steady clock, or gives
  // read_ns without one.
  void sync_clocks();
  template <typename Next>
  std::int64_t receive_time(cmsghdr* cmsg, Next next, std::int64_t read_ns) {
    for (; cmsg; cmsg = next(cmsg))
      if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SO_TIMESTAMPNS) return steady_from_kernel(*cmsg);
    ++untimed_reads;
    return read_ns;
  }

  // error: 0 or an errno value (ECANCELED after abort_connects). An open connection sends
  // the protocol's handshake, if it has one.
  void on_connected(Connection& connection, int error);
  // Bytes read from an open connection at now_ns: the wire decodes them into messages.
  void on_bytes(Connection& connection, std::string_view data, std::int64_t now_ns) {
    wire_.decode(connection, data, now_ns, *this);
  }
  void write_queued(Connection& connection);

  Engine& engine_;

 private:
  void launch_connects();

  // MessageSink: what the wire decoded.
  void on_message(Connection& connection, const Message& message, std::int64_t now_ns) override {
    if (message.kind != Reply::none && !keep_reply(message)) return;  // a chat line: one comparison
    if (message_handler_) message_handler_(connection, message, now_ns);
  }
  void answer(Connection& connection, std::string_view bytes) override { send(connection, bytes); }
  void garbled(Connection& connection, std::string_view why) override;
  // What the engine takes from a reply: a full server's limit, the first error, an own
  // line's count. False if the reply goes no further.
  bool keep_reply(const Message& message);

  std::int64_t steady_from_kernel(const cmsghdr& cmsg) const;

  const Wire& wire_;
  unsigned index_;
  std::int64_t realtime_minus_steady_ns_ = 0;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::deque<std::uint32_t> to_connect_;
  unsigned in_flight_ = 0;
  MessageHandler message_handler_;
  std::string hello_;  // the handshake being sent
};

// reduce()'s default: adds a worker's share to the total.
struct AddTo {
  template <class Total, class Share>
  void operator()(Total& total, Share&& share) const {
    total += std::forward<Share>(share);
  }
};

class Engine {
 public:
  // Picks the engine (options.engine; auto: io_uring where the kernel allows it, else
  // epoll with fallback() saying why) and starts the workers. Throws if --engine uring
  // was asked for and io_uring is unavailable.
  explicit Engine(const Options& options);
  ~Engine();

  const Options& options() const { return options_; }
  const Wire& wire() const { return *wire_; }
  std::vector<std::unique_ptr<Worker>>& workers() { return workers_; }
  Worker& worker_of(std::uint32_t id) { return *workers_[id % workers_.size()]; }
  const char* name() const { return kind_ == EngineKind::uring ? "uring" : "epoll"; }
  // Why the default engine fell back to epoll; nullopt when it did not.
  const std::optional<std::string>& fallback() const { return fallback_; }

  // Run fn(worker) on every worker's thread at once; wait for all.
  void for_each_worker(const std::function<void(Worker&)>& fn);

  // Combines what the workers own, the wrk way: part(worker) runs on each worker's own
  // thread, where its state may be read (and changed) while lines still arrive, and
  // returns that worker's share, a copy; the shares are then combined here, on the
  // calling thread, with nothing locked: combine(total, share), by default total += share.
  // part runs on every worker at once, so it only reads what it shares with the others.
  template <class Part, class Combine = AddTo>
  auto reduce(const Part& part, Combine combine = {}) {
    using Share = std::invoke_result_t<const Part&, Worker&>;
    std::vector<std::optional<Share>> shares(workers_.size());
    for_each_worker([&](Worker& worker) { shares[worker.index()].emplace(part(worker)); });
    Share total = std::move(*shares.front());
    for (std::size_t i = 1; i < shares.size(); ++i) combine(total, std::move(*shares[i]));
    return total;
  }

  // Open connections for clients [attempted, target). Returns when all are open or
  // failed, or a limit stopped the ramp, or the deadline passed.
  void ramp_to(std::uint32_t target, const std::function<void()>& progress);
  std::uint32_t attempted() const { return attempted_; }

  std::uint64_t sum(OwnedCount Worker::*counter) const;
  std::uint64_t open_connections() const { return sum(&Worker::connected) - sum(&Worker::closed); }

  // The first limit that stopped the run; later ones are ignored. Thread-safe.
  void hit_limit(const std::string& reason);
  std::optional<std::string> limit_hit() const;
  // The first error the server sent, or the first of its bytes that could not be parsed;
  // later ones are ignored. Thread-safe.
  void note_server_error(std::string_view text);
  std::optional<std::string> server_error() const;
  bool stop_connecting() const { return stop_connecting_.load(std::memory_order_relaxed); }

  const sockaddr_in& server() const { return server_; }
  const std::vector<in_addr_t>& source_ips() const { return source_ips_; }  // network byte order

 private:
  const Options& options_;
  std::unique_ptr<Wire> wire_;
  EngineKind kind_ = EngineKind::epoll;
  std::optional<std::string> fallback_;
  sockaddr_in server_{};
  std::vector<in_addr_t> source_ips_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::uint32_t attempted_ = 0;
  std::atomic<bool> stop_connecting_{false};
  mutable std::mutex limit_mutex_;
  std::optional<std::string> limit_hit_;
  int timestamps_on_ = -1;  // a socket that keeps the kernel's receive timestamps on
  std::atomic<bool> server_error_noted_{false};
  std::optional<std::string> server_error_;  // under limit_mutex_
};

// The engines (engine_epoll.cpp, engine_uring.cpp).
std::unique_ptr<Worker> make_epoll_worker(Engine& engine, unsigned index);
std::unique_ptr<Worker> make_uring_worker(Engine& engine, unsigned index);
// Why this process cannot run the io_uring engine (disabled, not permitted, a kernel
// without a feature it needs); nullopt when it can. Tries the real setup once.
std::optional<std::string> uring_unavailable();

// Room in a read for the control message of its receive time (SO_TIMESTAMPNS, which
// every socket has from its creation).
constexpr std::size_t receive_time_control_bytes = CMSG_SPACE(sizeof(timespec));

// "127.0.0.1-127.0.0.8" or "127.0.0.1": the addresses in that range, inclusive, in
// network byte order.
std::vector<in_addr_t> parse_address_range(const std::string& text);

// Sleep in short slices until done() or the deadline; calls tick() each slice.
// Returns done() at the end.
bool wait_until(Clock::time_point deadline, const std::function<bool()>& done, const std::function<void()>& tick);

}  // namespace loadgen
