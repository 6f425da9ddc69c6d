#include "engine.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <stdexcept>

namespace loadgen {

namespace {

std::string describe_connect_error(int error) {
  const std::string text = std::strerror(error);
  switch (error) {
    case EMFILE:
    case ENFILE:
      return "fd limit: loadgen ran out of file descriptors (" + text + ")";
    case EADDRNOTAVAIL:
    case EADDRINUSE:
      return "ports: no free source port (" + text + "); spread --source-ips";
    case ECONNREFUSED:
      return "server refused the connection (ECONNREFUSED)";
    default:
      return "connect failed: " + text;
  }
}

// Ask the kernel to stamp every read on fd with its receive time.
void request_receive_times(int fd) {
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
}

}  // namespace

Worker::Worker(Engine& engine, unsigned index) : engine_(engine), wire_(engine.wire()), index_(index) {}

void Worker::call(const std::function<void()>& fn) {
  std::promise<void> done;
  post([&] {
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
  const unsigned max_in_flight =
      std::max(1u, options.connect_concurrency / static_cast<unsigned>(engine_.workers().size()));
  while (in_flight_ < max_in_flight && !to_connect_.empty()) {
    if (engine_.stop_connecting()) {
      to_connect_.clear();
      break;
    }
    const std::uint32_t id = to_connect_.front();
    to_connect_.pop_front();
    int error = 0;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) error = errno;
    // Before connecting: a server may send first (a broker's greeting), before on_open.
    if (!error) request_receive_times(fd);
    const auto& sources = engine_.source_ips();
    if (!error && !sources.empty()) {
      // Without IP_BIND_ADDRESS_NO_PORT, bind() would pick the port now, unique per
      // address regardless of destination; with it the port is chosen at connect().
      int on = 1;
      ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
      sockaddr_in source{};
      source.sin_family = AF_INET;
      source.sin_addr.s_addr = sources[id % sources.size()];
      if (::bind(fd, reinterpret_cast<const sockaddr*>(&source), sizeof source) != 0) error = errno;
    }
    if (error) {
      if (fd >= 0) ::close(fd);
      engine_.hit_limit(describe_connect_error(error));
      to_connect_.clear();
      break;
    }
    connections_.push_back(make_connection(id));
    ++in_flight_;
    begin_connect(*connections_.back(), fd);
  }
  connects_pending = to_connect_.size() + in_flight_;
}

void Worker::on_connected(Connection& connection, int error) {
  --in_flight_;
  if (error) {
    if (connection.state == ConnectionState::connecting && error != ECANCELED)
      engine_.hit_limit(describe_connect_error(error));
    connection.state = ConnectionState::failed;
    release(connection, false);
  } else if (connection.state == ConnectionState::connecting) {
    connection.state = ConnectionState::open;
    ++connected;
    on_open(connection);
    wire_.hello(hello_, engine_.options().client_offset + connection.id);
    if (!hello_.empty()) send(connection, hello_);
  }  // else: aborted after completing; abort_connects released it
  launch_connects();
}

void Worker::abort_connects() {
  to_connect_.clear();
  for (auto& connection : connections_) {
    if (connection->state != ConnectionState::connecting) continue;
    connection->state = ConnectionState::failed;
    release(*connection, false);
  }
  connects_pending = to_connect_.size() + in_flight_;
}

bool Worker::keep_reply(const Message& message) {
  switch (message.kind) {
    case Reply::own_line:
      ++own_copies;  // not a delivery: the server handed the sender its own line
      return false;
    case Reply::server_full:
      engine_.hit_limit("server full: the server answered " + std::string(message.text));
      return true;
    case Reply::error:
      engine_.note_server_error(message.text);
      return true;
    default:
      return true;
  }
}

void Worker::garbled(Connection& connection, std::string_view why) {
  engine_.note_server_error(why);
  close(connection);  // what follows cannot be read either
}

void Worker::sync_clocks() {
  timespec real{};
  ::clock_gettime(CLOCK_REALTIME, &real);
  const std::int64_t steady = to_ns(Clock::now());
  realtime_minus_steady_ns_ = real.tv_sec * std::int64_t{1'000'000'000} + real.tv_nsec - steady;
}

std::int64_t Worker::steady_from_kernel(const cmsghdr& cmsg) const {
  timespec stamp{};
  std::memcpy(&stamp, CMSG_DATA(&cmsg), sizeof stamp);
  return stamp.tv_sec * std::int64_t{1'000'000'000} + stamp.tv_nsec - realtime_minus_steady_ns_;
}

bool Worker::send(Connection& connection, std::string_view bytes) {
  if (connection.state != ConnectionState::open) return false;
  connection.queued.append(bytes);
  if (connection.writing.empty()) write_queued(connection);
  return true;
}

void Worker::write_queued(Connection& connection) {
  // Swap rather than copy: both buffers keep their capacity, so steady state allocates nothing.
  std::swap(connection.writing, connection.queued);
  start_write(connection);
}

void Worker::close(Connection& connection) {
  if (connection.state != ConnectionState::open) return;
  connection.state = ConnectionState::closed;
  release(connection, false);
  ++closed;
}

void Worker::close_all() {
  to_connect_.clear();
  for (auto& connection : connections_) {
    if (connection->state == ConnectionState::open) {
      connection->state = ConnectionState::closed;
      ++closed;
    } else if (connection->state == ConnectionState::connecting) {
      connection->state = ConnectionState::failed;
    }
    release(*connection, true);
  }
}

Engine::Engine(const Options& options) : options_(options), wire_(make_wire(options.protocol, options.client_offset)) {
  // The kernel stamps received packets only while some socket asks for it, and the first
  // one to ask switches that on only once a deferred work item has run: a server that
  // greets first (NATS's INFO) would beat it. One socket asks for the engine's lifetime.
  timestamps_on_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (timestamps_on_ >= 0) request_receive_times(timestamps_on_);
  server_.sin_family = AF_INET;
  server_.sin_port = htons(options.port);
  if (::inet_pton(AF_INET, options.host.c_str(), &server_.sin_addr) != 1)
    throw std::runtime_error("--host must be an IPv4 address: " + options.host);
  if (!options.source_ips.empty()) source_ips_ = parse_address_range(options.source_ips);
  kind_ = options.engine == EngineKind::epoll ? EngineKind::epoll : EngineKind::uring;
  if (kind_ == EngineKind::uring) {
    if (auto why = uring_unavailable()) {
      if (options.engine == EngineKind::uring)
        throw std::runtime_error("--engine uring: io_uring is not available here: " + *why);
      kind_ = EngineKind::epoll;
      fallback_ = std::move(why);
    }
  }
  for (unsigned i = 0; i < std::max(1u, options.threads); ++i)
    workers_.push_back(kind_ == EngineKind::uring ? make_uring_worker(*this, i) : make_epoll_worker(*this, i));
}

Engine::~Engine() {
  // Close sockets on their own threads before the workers go away.
  for_each_worker([](Worker& worker) { worker.close_all(); });
  for (auto& worker : workers_) worker->stop();
  workers_.clear();
  if (timestamps_on_ >= 0) ::close(timestamps_on_);
}

void Engine::for_each_worker(const std::function<void(Worker&)>& fn) {
  std::vector<std::promise<void>> done(workers_.size());
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    workers_[i]->post([&, i] {
      fn(*workers_[i]);
      done[i].set_value();
    });
  }
  for (auto& d : done) d.get_future().wait();
}

void Engine::ramp_to(std::uint32_t target, const std::function<void()>& progress) {
  if (target <= attempted_ || stop_connecting()) return;
  const std::uint32_t first = attempted_;
  attempted_ = target;
  // Hand the workers clients [handed, upto): all at once, or with --connect-rate as the
  // clock allows. A connect completes in the kernel before the server accepts it, so only
  // a rate, not the number in flight, keeps a slow accepter's backlog from overflowing.
  std::uint32_t handed = first;
  auto hand_out = [&](std::uint32_t upto) {
    if (upto <= handed) return;
    std::vector<std::vector<std::uint32_t>> ids(workers_.size());
    for (std::uint32_t id = handed; id < upto; ++id) ids[id % workers_.size()].push_back(id);
    handed = upto;
    // Synchronously: once a worker has its batch, its connects_pending counts it.
    for (std::size_t i = 0; i < workers_.size(); ++i)
      if (!ids[i].empty()) workers_[i]->call([&, i] { workers_[i]->start_connects(std::move(ids[i])); });
  };
  const auto started = Clock::now();
  auto allowed = [&] {
    if (options_.connect_rate <= 0) return target;
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    return static_cast<std::uint32_t>(std::min<double>(target, first + 1 + seconds * options_.connect_rate));
  };
  hand_out(allowed());
  // The deadline is for the connects, so a paced ramp gets the time its pacing takes.
  const double pacing_s = options_.connect_rate > 0 ? (target - first) / options_.connect_rate : 0;
  const auto deadline = started + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(options_.connect_timeout_s + pacing_s));
  const bool finished = wait_until(
      deadline, [&] { return handed == target && sum(&Worker::connects_pending) == 0; },
      [&] {
        if (stop_connecting())
          handed = target;  // a limit stopped the ramp: the clients not handed out are not attempted
        hand_out(allowed());
        if (progress) progress();
      });
  if (!finished) {
    const auto pending = sum(&Worker::connects_pending);
    hit_limit("connect deadline: " + std::to_string(pending) + " connects still pending after " +
              std::to_string(options_.connect_timeout_s + pacing_s) + " s (server not accepting?)");
    for_each_worker([](Worker& worker) { worker.abort_connects(); });
  }
}

std::uint64_t Engine::sum(OwnedCount Worker::*counter) const {
  std::uint64_t total = 0;
  for (const auto& worker : workers_) total += ((*worker).*counter).value();
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

void Engine::note_server_error(std::string_view text) {
  if (server_error_noted_.exchange(true, std::memory_order_relaxed)) return;  // no lock after the first
  std::lock_guard lock(limit_mutex_);
  server_error_ = std::string(text);
}

std::optional<std::string> Engine::server_error() const {
  std::lock_guard lock(limit_mutex_);
  return server_error_;
}

std::vector<in_addr_t> parse_address_range(const std::string& text) {
  const auto dash = text.find('-');
  auto parse = [&](const std::string& part) {
    in_addr address{};
    if (::inet_pton(AF_INET, part.c_str(), &address) != 1)
      throw std::runtime_error("--source-ips: not an IPv4 address: " + part);
    return ntohl(address.s_addr);
  };
  const std::uint32_t first = parse(text.substr(0, dash));
  const std::uint32_t last = dash == std::string::npos ? first : parse(text.substr(dash + 1));
  if (last < first) throw std::runtime_error("--source-ips: empty range " + text);
  std::vector<in_addr_t> addresses;
  for (std::uint64_t a = first; a <= last; ++a) addresses.push_back(htonl(static_cast<std::uint32_t>(a)));
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
