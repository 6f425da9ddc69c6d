// The connection engine: worker threads, each owning one io_context, its connections and
// its counters (the wrk shape: nothing shared on the hot path). The main thread drives
// phases by posting work to every worker and polling their counters.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "metrics.hpp"
#include "options.hpp"

namespace loadgen {

namespace asio = boost::asio;
using asio::ip::tcp;

// A counter written only by its worker's thread and read by the main thread. A relaxed
// load and store (not a locked read-modify-write): the cost of a plain increment.
class OwnedCounter {
 public:
  void add(std::uint64_t n = 1) { value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  std::uint64_t get() const { return value_.load(std::memory_order_relaxed); }
  void set(std::uint64_t v) { value_.store(v, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

enum class ConnectionState { connecting, open, closed, failed };

struct Connection {
  Connection(asio::io_context& io, std::uint32_t client_id) : socket(io), id(client_id) {}

  tcp::socket socket;
  std::uint32_t id;  // global client index, 0..clients-1
  ConnectionState state = ConnectionState::connecting;
  std::string partial;   // the start of a line not yet complete
  std::string queued;    // output waiting for the write in flight
  std::string writing;   // output of the write in flight
  bool joined = false;   // chat: got "/joined"; broadcast: got a sync line

  // Sender side (chat: every client; broadcast: client 0 only).
  std::unique_ptr<asio::steady_timer> send_timer;
  std::uint64_t sent = 0;  // lines handed to the socket, also the next sequence number

  // Receiver side: one track per possible sender, the senders of this client's room.
  std::uint32_t track_base = 0;
  std::vector<SenderTrack> tracks;
};

class Engine;

class Worker {
 public:
  // A complete line (without its LF) received on a connection, with the time of the read.
  using LineHandler = std::function<void(Worker&, Connection&, std::string_view, std::int64_t now_ns)>;

  Worker(Engine& engine, unsigned index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  asio::io_context& io() { return io_; }
  unsigned index() const { return index_; }

  // Run fn on this worker's thread and wait until it has run.
  void call(const std::function<void()>& fn);

  // On the worker thread: open connections for these client ids, a bounded number in flight.
  void start_connects(std::vector<std::uint32_t> ids);
  // On the worker thread: give up on connects still in flight (the phase deadline passed).
  void abort_connects();
  // On the worker thread: queue bytes for a connection; false if it is not open.
  bool send(Connection& connection, std::string_view bytes);
  void close(Connection& connection);
  void close_all();

  std::vector<std::unique_ptr<Connection>>& connections() { return connections_; }
  Connection* find(std::uint32_t id);
  void set_line_handler(LineHandler handler) { line_handler_ = std::move(handler); }

  // Read by the main thread while the worker runs.
  OwnedCounter connects_pending;  // queued or in flight
  OwnedCounter connected;         // ever reached the open state
  OwnedCounter closed;            // open connections that closed since (server or error)
  OwnedCounter server_full;       // "/error server-full" lines received
  OwnedCounter other_errors;      // any other "/error" line
  OwnedCounter joined;            // connections that completed their scenario's handshake
  OwnedCounter lines_received;    // every line, replies included
  OwnedCounter unique_deliveries; // chat lines counted once per (receiver, sender, sequence)

  // Per-worker measurements, merged by the main thread after the workers are idle.
  LatencyRecorder latency;
  std::uint64_t window_deliveries = 0;  // deliveries whose intended send time is in the window
  ArrivalWindow window_arrivals;        // chat: deliveries that arrived during the window
  std::uint64_t late_sends = 0;         // sends made more than 1 ms after their intended time
  std::uint64_t unknown_lines = 0;      // lines that were neither ours nor a known reply
  std::vector<std::int64_t> message_last_arrival_ns;  // broadcast: per message, latest arrival
  std::vector<std::uint32_t> message_receivers;       // broadcast: per message, receivers that had it
  std::string last_stats_reply;                       // chat: the last "/stats ..." line
  OwnedCounter stats_replies;
  std::string scratch;  // line formatting without allocation

 private:
  void launch_connects();
  void on_connected(Connection& connection, const boost::system::error_code& error);
  void wait_readable(Connection& connection);
  void on_readable(Connection& connection);
  void write_next(Connection& connection);

  Engine& engine_;
  unsigned index_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::deque<std::uint32_t> to_connect_;
  unsigned in_flight_ = 0;
  std::vector<char> read_buffer_;  // one per worker: a connection needs bytes only while parsing
  LineHandler line_handler_;
  std::thread thread_;
};

class Engine {
 public:
  explicit Engine(const Options& options);
  ~Engine();

  const Options& options() const { return options_; }
  std::vector<std::unique_ptr<Worker>>& workers() { return workers_; }
  Worker& worker_of(std::uint32_t id) { return *workers_[id % workers_.size()]; }

  // Run fn(worker) on every worker's thread at once; wait for all.
  void for_each_worker(const std::function<void(Worker&)>& fn);

  // Open connections for clients [attempted, target). Returns when all are open or
  // failed, or a limit stopped the ramp, or the deadline passed.
  void ramp_to(std::uint32_t target, const std::function<void()>& progress);
  std::uint32_t attempted() const { return attempted_; }

  std::uint64_t sum(OwnedCounter Worker::*counter) const;
  std::uint64_t open_connections() const { return sum(&Worker::connected) - sum(&Worker::closed); }

  // The first limit that stopped the run; later ones are ignored. Thread-safe.
  void hit_limit(const std::string& reason);
  std::optional<std::string> limit_hit() const;
  bool stop_connecting() const { return stop_connecting_.load(std::memory_order_relaxed); }

  const tcp::endpoint& server() const { return server_; }
  const std::vector<asio::ip::address_v4>& source_ips() const { return source_ips_; }

 private:
  const Options& options_;
  tcp::endpoint server_;
  std::vector<asio::ip::address_v4> source_ips_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::uint32_t attempted_ = 0;
  std::atomic<bool> stop_connecting_{false};
  mutable std::mutex limit_mutex_;
  std::optional<std::string> limit_hit_;
};

// "127.0.0.1-127.0.0.8" or "127.0.0.1": the addresses in that range, inclusive.
std::vector<asio::ip::address_v4> parse_address_range(const std::string& text);

// Sleep in short slices until done() or the deadline; calls tick() each slice.
// Returns done() at the end.
bool wait_until(Clock::time_point deadline, const std::function<bool()>& done, const std::function<void()>& tick);

}  // namespace loadgen
