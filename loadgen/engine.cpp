#include "engine.hpp"

#include <cerrno>
#include <netinet/in.h>
#include <stdexcept>

namespace loadgen {

namespace {

constexpr std::size_t read_buffer_bytes = 64 * 1024;
// A server line longer than this is not one of ours; stop carrying it rather than grow.
constexpr std::size_t max_partial_bytes = 1 << 20;

std::string describe_connect_error(const boost::system::error_code& error) {
  switch (error.value()) {
    case EMFILE:
    case ENFILE:
      return "fd limit: loadgen ran out of file descriptors (" + error.message() + ")";
    case EADDRNOTAVAIL:
    case EADDRINUSE:
      return "ports: no free source port (" + error.message() + "); spread --source-ips";
    case ECONNREFUSED:
      return "server refused the connection (ECONNREFUSED)";
    default:
      return "connect failed: " + error.message();
  }
}

}  // namespace

Worker::Worker(Engine& engine, unsigned index)
    : engine_(engine), index_(index), io_(1), work_(asio::make_work_guard(io_)), read_buffer_(read_buffer_bytes) {
  thread_ = std::thread([this] { io_.run(); });
}

Worker::~Worker() {
  work_.reset();
  io_.stop();
  thread_.join();
}

void Worker::call(const std::function<void()>& fn) {
  std::promise<void> done;
  asio::post(io_, [&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

Connection* Worker::find(std::uint32_t id) {
  for (auto& connection : connections_)
    if (connection->id == id) return connection.get();
  return nullptr;
}

void Worker::start_connects(std::vector<std::uint32_t> ids) {
  to_connect_.insert(to_connect_.end(), ids.begin(), ids.end());
  launch_connects();
}

void Worker::launch_connects() {
  const Options& options = engine_.options();
  const unsigned max_in_flight = std::max(1u, options.connect_concurrency / static_cast<unsigned>(engine_.workers().size()));
  while (in_flight_ < max_in_flight && !to_connect_.empty()) {
    if (engine_.stop_connecting()) {
      to_connect_.clear();
      break;
    }
    const std::uint32_t id = to_connect_.front();
    to_connect_.pop_front();
    auto owned = std::make_unique<Connection>(io_, id);
    Connection& connection = *owned;
    boost::system::error_code error;
    connection.socket.open(tcp::v4(), error);
    const auto& sources = engine_.source_ips();
    if (!error && !sources.empty()) {
      // Without IP_BIND_ADDRESS_NO_PORT, bind() would pick the port now, unique per
      // address regardless of destination; with it the port is chosen at connect().
      int on = 1;
      ::setsockopt(connection.socket.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
      connection.socket.bind(tcp::endpoint(sources[id % sources.size()], 0), error);
    }
    if (error) {
      connection.state = ConnectionState::failed;
      engine_.hit_limit(describe_connect_error(error));
      to_connect_.clear();
      break;
    }
    connections_.push_back(std::move(owned));
    ++in_flight_;
    connection.socket.async_connect(engine_.server(), [this, &connection](const boost::system::error_code& error) {
      --in_flight_;
      on_connected(connection, error);
      launch_connects();
    });
  }
  connects_pending.set(to_connect_.size() + in_flight_);
}

void Worker::on_connected(Connection& connection, const boost::system::error_code& error) {
  if (error) {
    if (connection.state == ConnectionState::connecting && error != asio::error::operation_aborted)
      engine_.hit_limit(describe_connect_error(error));
    connection.state = ConnectionState::failed;
    boost::system::error_code ignored;
    connection.socket.close(ignored);
    return;
  }
  if (connection.state != ConnectionState::connecting) return;  // aborted after completing
  connection.state = ConnectionState::open;
  boost::system::error_code ignored;
  connection.socket.set_option(tcp::no_delay(true), ignored);
  connection.socket.non_blocking(true, ignored);
  connected.add();
  wait_readable(connection);
}

void Worker::abort_connects() {
  to_connect_.clear();
  for (auto& connection : connections_) {
    if (connection->state != ConnectionState::connecting) continue;
    connection->state = ConnectionState::failed;
    boost::system::error_code ignored;
    connection->socket.close(ignored);
  }
  connects_pending.set(to_connect_.size() + in_flight_);
}

// Readiness first, then a non-blocking read into the worker's buffer: an idle connection
// holds no read buffer at all, only the bytes of a line it has not completed.
void Worker::wait_readable(Connection& connection) {
  connection.socket.async_wait(tcp::socket::wait_read, [this, &connection](const boost::system::error_code& error) {
    if (error) {
      close(connection);
      return;
    }
    on_readable(connection);
  });
}

void Worker::on_readable(Connection& connection) {
  if (connection.state != ConnectionState::open) return;
  boost::system::error_code error;
  const std::size_t n = connection.socket.read_some(asio::buffer(read_buffer_), error);
  if (error == asio::error::would_block || error == asio::error::try_again) {
    wait_readable(connection);
    return;
  }
  if (error || n == 0) {
    close(connection);
    return;
  }
  const std::int64_t now = to_ns(Clock::now());
  std::string_view data(read_buffer_.data(), n);
  while (!data.empty()) {
    const auto end = data.find('\n');
    if (end == std::string_view::npos) {
      if (connection.partial.size() + data.size() <= max_partial_bytes) connection.partial.append(data);
      break;
    }
    std::string_view line = data.substr(0, end);
    if (!connection.partial.empty()) {
      connection.partial.append(line);
      line = connection.partial;
    }
    lines_received.add();
    if (line.starts_with("/error")) {
      if (line == "/error server-full") {
        server_full.add();
        engine_.hit_limit("server full: the server answered /error server-full");
      } else {
        other_errors.add();
      }
    }
    if (line_handler_) line_handler_(*this, connection, line, now);
    connection.partial.clear();
    data.remove_prefix(end + 1);
  }
  if (connection.state == ConnectionState::open) wait_readable(connection);
}

bool Worker::send(Connection& connection, std::string_view bytes) {
  if (connection.state != ConnectionState::open) return false;
  connection.queued.append(bytes);
  if (connection.writing.empty()) write_next(connection);
  return true;
}

void Worker::write_next(Connection& connection) {
  // Swap rather than copy: both buffers keep their capacity, so steady state allocates nothing.
  std::swap(connection.writing, connection.queued);
  asio::async_write(connection.socket, asio::buffer(connection.writing),
                    [this, &connection](const boost::system::error_code& error, std::size_t) {
                      connection.writing.clear();
                      if (error) {
                        close(connection);
                        return;
                      }
                      if (!connection.queued.empty() && connection.state == ConnectionState::open) write_next(connection);
                    });
}

void Worker::close(Connection& connection) {
  if (connection.send_timer) connection.send_timer->cancel();
  if (connection.state != ConnectionState::open) return;
  connection.state = ConnectionState::closed;
  boost::system::error_code ignored;
  // A reset, not a FIN: nothing is left in TIME_WAIT to disturb the next measurement.
  connection.socket.set_option(asio::socket_base::linger(true, 0), ignored);
  connection.socket.close(ignored);
  closed.add();
}

void Worker::close_all() {
  to_connect_.clear();
  for (auto& connection : connections_) {
    if (connection->state == ConnectionState::connecting) connection->state = ConnectionState::failed;
    close(*connection);
    boost::system::error_code ignored;
    connection->socket.close(ignored);
  }
}

Engine::Engine(const Options& options) : options_(options) {
  boost::system::error_code error;
  const auto address = asio::ip::make_address_v4(options.host, error);
  if (error) throw std::runtime_error("--host must be an IPv4 address: " + options.host);
  server_ = tcp::endpoint(address, options.port);
  if (!options.source_ips.empty()) source_ips_ = parse_address_range(options.source_ips);
  for (unsigned i = 0; i < std::max(1u, options.threads); ++i) workers_.push_back(std::make_unique<Worker>(*this, i));
}

Engine::~Engine() {
  // Close sockets on their own threads before the io_contexts go away.
  for_each_worker([](Worker& worker) { worker.close_all(); });
  workers_.clear();
}

void Engine::for_each_worker(const std::function<void(Worker&)>& fn) {
  std::vector<std::promise<void>> done(workers_.size());
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    asio::post(workers_[i]->io(), [&, i] {
      fn(*workers_[i]);
      done[i].set_value();
    });
  }
  for (auto& d : done) d.get_future().wait();
}

void Engine::ramp_to(std::uint32_t target, const std::function<void()>& progress) {
  if (target <= attempted_ || stop_connecting()) return;
  std::vector<std::vector<std::uint32_t>> ids(workers_.size());
  for (std::uint32_t id = attempted_; id < target; ++id) ids[id % workers_.size()].push_back(id);
  attempted_ = target;
  // Counted before the post, so the wait below cannot see "nothing pending" too early.
  for (std::size_t i = 0; i < workers_.size(); ++i) workers_[i]->connects_pending.add(ids[i].size());
  for (std::size_t i = 0; i < workers_.size(); ++i)
    asio::post(workers_[i]->io(), [this, i, batch = std::move(ids[i])]() mutable { workers_[i]->start_connects(std::move(batch)); });
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.connect_timeout_s));
  const bool finished = wait_until(deadline, [&] { return sum(&Worker::connects_pending) == 0; }, progress);
  if (!finished) {
    const auto pending = sum(&Worker::connects_pending);
    hit_limit("connect deadline: " + std::to_string(pending) + " connects still pending after " +
              std::to_string(options_.connect_timeout_s) + " s (server not accepting?)");
    for_each_worker([](Worker& worker) { worker.abort_connects(); });
  }
}

std::uint64_t Engine::sum(OwnedCounter Worker::*counter) const {
  std::uint64_t total = 0;
  for (const auto& worker : workers_) total += ((*worker).*counter).get();
  return total;
}

void Engine::hit_limit(const std::string& reason) {
  stop_connecting_.store(true, std::memory_order_relaxed);
  std::lock_guard lock(limit_mutex_);
  if (!limit_hit_) limit_hit_ = reason;
}

std::optional<std::string> Engine::limit_hit() const {
  std::lock_guard lock(limit_mutex_);
  return limit_hit_;
}

std::vector<asio::ip::address_v4> parse_address_range(const std::string& text) {
  const auto dash = text.find('-');
  const auto first = asio::ip::make_address_v4(text.substr(0, dash));
  const auto last = dash == std::string::npos ? first : asio::ip::make_address_v4(text.substr(dash + 1));
  if (last.to_uint() < first.to_uint()) throw std::runtime_error("--source-ips: empty range " + text);
  std::vector<asio::ip::address_v4> addresses;
  for (auto a = first.to_uint(); a <= last.to_uint(); ++a) addresses.emplace_back(a);
  return addresses;
}

bool wait_until(Clock::time_point deadline, const std::function<bool()>& done, const std::function<void()>& tick) {
  while (!done()) {
    if (Clock::now() >= deadline) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (tick) tick();
  }
  return true;
}

}  // namespace loadgen
