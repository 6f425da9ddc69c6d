// The epoll engine (--engine epoll): Asio's reactor, one io_context per worker. Every
// read, write and connect is its own system call; portable to any Linux.
#include <sys/socket.h>

#include <boost/asio.hpp>
#include <cerrno>
#include <future>

#include "engine.hpp"

namespace loadgen {

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

constexpr std::size_t read_buffer_bytes = 64 * 1024;

struct EpollConnection : Connection {
  EpollConnection(asio::io_context& io, std::uint32_t id) : Connection(id), socket(io) {}
  tcp::socket socket;
};

EpollConnection& of(Connection& connection) { return static_cast<EpollConnection&>(connection); }

class EpollWorker final : public Worker {
 public:
  EpollWorker(Engine& engine, unsigned index)
      : Worker(engine, index), io_(1), work_(asio::make_work_guard(io_)), timer_(io_), read_buffer_(read_buffer_bytes) {
    thread_ = std::thread([this] { io_.run(); });
  }
  ~EpollWorker() override {
    stop();
    connections().clear();  // their sockets belong to io_, which goes first
  }

  void post(std::function<void()> fn) override { asio::post(io_, std::move(fn)); }

  void stop() override {
    if (!thread_.joinable()) return;
    work_.reset();
    io_.stop();
    thread_.join();
  }

  void set_timer(std::int64_t when_ns, std::function<void()> fn) override {
    timer_fn_ = std::move(fn);
    // A wait already completed but not yet run cannot be cancelled; the generation tells
    // its handler it is stale.
    const std::uint64_t generation = ++timer_generation_;
    timer_.expires_at(
        Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(when_ns))));
    timer_.async_wait([this, generation](const boost::system::error_code& error) {
      if (error || generation != timer_generation_) return;
      auto fn = std::move(timer_fn_);
      timer_fn_ = nullptr;
      fn();
    });
  }

  void cancel_timer() override {
    ++timer_generation_;
    timer_fn_ = nullptr;
    timer_.cancel();
  }

 protected:
  std::unique_ptr<Connection> make_connection(std::uint32_t id) override {
    return std::make_unique<EpollConnection>(io_, id);
  }

  void begin_connect(Connection& connection, int fd) override {
    auto& socket = of(connection).socket;
    socket.assign(tcp::v4(), fd);
    const sockaddr_in& server = engine_.server();
    const tcp::endpoint endpoint(asio::ip::address_v4(ntohl(server.sin_addr.s_addr)), ntohs(server.sin_port));
    socket.async_connect(endpoint, [this, &connection](const boost::system::error_code& error) {
      on_connected(connection, error.value());
    });
  }

  void on_open(Connection& connection) override {
    boost::system::error_code ignored;
    of(connection).socket.set_option(tcp::no_delay(true), ignored);
    of(connection).socket.non_blocking(true, ignored);
    wait_readable(connection);
  }

  void start_write(Connection& connection) override {
    asio::async_write(of(connection).socket, asio::buffer(connection.writing),
                      [this, &connection](const boost::system::error_code& error, std::size_t) {
                        connection.writing.clear();
                        if (error) {
                          close(connection);
                          return;
                        }
                        if (!connection.queued.empty() && connection.state == ConnectionState::open)
                          write_queued(connection);
                      });
  }

  void release(Connection& connection, bool reset) override {
    auto& socket = of(connection).socket;
    if (!socket.is_open()) return;
    boost::system::error_code ignored;
    if (reset) socket.set_option(asio::socket_base::linger(true, 0), ignored);
    socket.close(ignored);
  }

 private:
  // Readiness first, then a non-blocking read into the worker's buffer: an idle connection
  // holds no read buffer at all, only the bytes of a line it has not completed.
  void wait_readable(Connection& connection) {
    of(connection)
        .socket.async_wait(tcp::socket::wait_read, [this, &connection](const boost::system::error_code& error) {
          if (error) {
            close(connection);
            return;
          }
          on_readable(connection);
        });
  }

  void on_readable(Connection& connection) {
    if (connection.state != ConnectionState::open) return;
    // recvmsg rather than read_some: the receive time comes with the bytes.
    iovec data{read_buffer_.data(), read_buffer_.size()};
    alignas(cmsghdr) char control[receive_time_control_bytes];
    msghdr header{nullptr, 0, &data, 1, control, sizeof control, 0};
    const ssize_t n = ::recvmsg(of(connection).socket.native_handle(), &header, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      wait_readable(connection);
      return;
    }
    if (n <= 0) {
      close(connection);
      return;
    }
    const std::int64_t now = to_ns(Clock::now());
    sync_clocks();
    const std::int64_t arrived = receive_time(
        CMSG_FIRSTHDR(&header), [&](cmsghdr* cmsg) { return CMSG_NXTHDR(&header, cmsg); }, now);
    on_bytes(connection, std::string_view(read_buffer_.data(), static_cast<std::size_t>(n)), arrived);
    if (connection.state == ConnectionState::open) wait_readable(connection);
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::steady_timer timer_;
  std::function<void()> timer_fn_;
  std::uint64_t timer_generation_ = 0;
  std::vector<char> read_buffer_;  // one per worker: a connection needs bytes only while parsing
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Worker> make_epoll_worker(Engine& engine, unsigned index) {
  return std::make_unique<EpollWorker>(engine, index);
}

}  // namespace loadgen
