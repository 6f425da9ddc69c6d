// The io_uring engine (--engine uring, the default where the kernel allows it). Each
// worker owns one ring; its thread queues every operation a wake-up produces (sends that
// fell due, re-armed receives, connects) and hands them to the kernel in the same
// io_uring_enter that waits for the next completions: one system call per wake-up where
// the epoll engine makes one per operation.
//
// - IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN: completions run in this thread when it
//   waits, never as interrupting task work. No SQPOLL: its kernel thread would burn a core
//   that loadgen's CPU figures do not show.
// - Sockets are only ever polled by io_uring (never punted to io-wq); in case the kernel
//   still creates io-wq workers, they are pinned to loadgen's own CPUs.
// - Receives are multishot into a ring of provided buffers: one armed request per
//   connection, no buffer held by an idle one. When the kernel ends a multishot (the
//   buffers ran out, ENOBUFS, or for its own reasons) the connection is re-armed after
//   its last completion; the bytes stay in the socket meanwhile, so none is lost or
//   reordered.
#include <liburing.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <stdexcept>

#include "engine.hpp"

namespace loadgen {

namespace {

constexpr unsigned sq_entries = 4096;
constexpr unsigned cq_entries = 16384;
constexpr unsigned buffer_bytes = 4096;
constexpr unsigned buffer_group = 0;
// With a tick, a worker also wakes once this many completions are waiting: the buffer
// ring (--uring-buffers) must not run dry between wake-ups.
constexpr unsigned batch_completions = 256;

// user_data: the connection's address with the operation in its low bits (Connection is
// 8-aligned). 0: a completion nobody waits for (a cancel).
enum Op : std::uintptr_t { op_ignore = 0, op_connect = 1, op_recv = 2, op_send = 3, op_wake = 4, op_mask = 7 };

std::string errno_text(const char* what, int error) { return std::string(what) + ": " + std::strerror(error); }

// A ring set up as the engine uses it; the error, if any, says which step failed.
std::optional<std::string> init_ring(io_uring& ring) {
  io_uring_params params{};
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
  params.cq_entries = cq_entries;
  int r = io_uring_queue_init_params(sq_entries, &ring, &params);
  if (r == -EINVAL) return "io_uring_setup: the kernel lacks IORING_SETUP_DEFER_TASKRUN (Linux 6.1)";
  if (r == -ENOSYS) return "io_uring_setup: ENOSYS (kernel built without io_uring, or a seccomp filter)";
  if (r == -EPERM) return "io_uring_setup: EPERM (kernel.io_uring_disabled, or a seccomp filter)";
  if (r < 0) return errno_text("io_uring_setup", -r);
  std::optional<std::string> error;
  if (!(params.features & IORING_FEAT_EXT_ARG)) error = "the kernel lacks IORING_FEAT_EXT_ARG (Linux 5.11)";
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (!error && ::sched_getaffinity(0, sizeof cpus, &cpus) == 0) {
    r = io_uring_register_iowq_aff(&ring, sizeof cpus, &cpus);
    if (r < 0) error = errno_text("io_uring_register_iowq_aff", -r);
  }
  if (error) io_uring_queue_exit(&ring);
  return error;
}

struct BufferRing {
  io_uring_buf_ring* ring = nullptr;
  std::size_t ring_bytes = 0;
  char* buffers = nullptr;

  // liburing 2.3 has no io_uring_setup_buf_ring: map the ring, register it, fill it.
  std::optional<std::string> init(io_uring& uring, unsigned count, unsigned bytes) {
    ring_bytes = count * sizeof(io_uring_buf);
    void* memory = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (memory == MAP_FAILED) return errno_text("mmap", errno);
    ring = static_cast<io_uring_buf_ring*>(memory);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(memory);
    reg.ring_entries = count;
    reg.bgid = buffer_group;
    if (const int r = io_uring_register_buf_ring(&uring, &reg, 0); r < 0)
      return errno_text("io_uring_register_buf_ring", -r);
    io_uring_buf_ring_init(ring);
    buffers = new char[static_cast<std::size_t>(count) * bytes];
    for (unsigned i = 0; i < count; ++i)
      io_uring_buf_ring_add(ring, buffers + static_cast<std::size_t>(i) * bytes, bytes, static_cast<unsigned short>(i),
                            io_uring_buf_ring_mask(count), static_cast<int>(i));
    io_uring_buf_ring_advance(ring, static_cast<int>(count));
    return std::nullopt;
  }
  ~BufferRing() {
    if (ring) ::munmap(ring, ring_bytes);
    delete[] buffers;
  }
};

struct UringConnection : Connection {
  using Connection::Connection;
  int fd = -1;
  bool connecting = false, receiving = false, sending = false;  // requests in flight
  std::size_t write_offset = 0;                                 // bytes of writing already sent
};

UringConnection& of(Connection& connection) { return static_cast<UringConnection&>(connection); }

class UringWorker final : public Worker {
 public:
  UringWorker(Engine& engine, unsigned index) : Worker(engine, index), buffer_count_(engine.options().uring_buffers) {
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
    if (wake_fd_ < 0) throw std::runtime_error(errno_text("eventfd", errno));
    std::promise<std::optional<std::string>> ready;
    auto started = ready.get_future();
    // The ring is created on the thread that uses it: SINGLE_ISSUER binds it to its creator.
    thread_ = std::thread([this, &ready] { run(ready); });
    if (auto error = started.get()) {
      thread_.join();
      ::close(wake_fd_);
      throw std::runtime_error("io_uring engine: " + *error);
    }
  }

  ~UringWorker() override {
    stop();
    connections().clear();
    ::close(wake_fd_);
  }

  void post(std::function<void()> fn) override {
    {
      std::lock_guard lock(post_mutex_);
      posted_.push_back(std::move(fn));
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  }

  void stop() override {
    if (!thread_.joinable()) return;
    post([this] { stopping_ = true; });
    thread_.join();
  }

  void set_timer(std::int64_t when_ns, std::function<void()> fn) override {
    timer_ns_ = when_ns;
    timer_fn_ = std::move(fn);
  }
  void cancel_timer() override {
    timer_ns_ = -1;
    timer_fn_ = nullptr;
  }

 protected:
  std::unique_ptr<Connection> make_connection(std::uint32_t id) override {
    return std::make_unique<UringConnection>(id);
  }

  void begin_connect(Connection& connection, int fd) override {
    auto& c = of(connection);
    c.fd = fd;
    c.connecting = true;
    const sockaddr_in& server = engine_.server();
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_connect(sqe, fd, reinterpret_cast<const sockaddr*>(&server), sizeof server);
    io_uring_sqe_set_data64(sqe, tag(c, op_connect));
  }

  void on_open(Connection& connection) override {
    int on = 1;
    ::setsockopt(of(connection).fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    arm_receive(of(connection));
  }

  void start_write(Connection& connection) override {
    auto& c = of(connection);
    c.write_offset = 0;
    submit_send(c);
  }

  void release(Connection& connection, bool reset) override {
    auto& c = of(connection);
    if (c.fd < 0) return;
    if (reset) {
      const linger abort{1, 0};
      ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    }
    // A request in flight holds the socket open past close(): cancel them (by user_data,
    // which needs no fd), so the socket goes (with its reset) once they have let go.
    const std::pair<bool, Op> requests[] = {{c.connecting, op_connect}, {c.receiving, op_recv}, {c.sending, op_send}};
    for (const auto& [busy, op] : requests) {
      if (!busy) continue;
      io_uring_sqe* sqe = next_sqe();
      io_uring_prep_cancel64(sqe, tag(c, op), 0);
      io_uring_sqe_set_data64(sqe, op_ignore);
    }
    ::close(c.fd);
    c.fd = -1;
  }

 private:
  static std::uint64_t tag(UringConnection& c, Op op) { return reinterpret_cast<std::uintptr_t>(&c) | op; }

  io_uring_sqe* next_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (!sqe) {  // the queue is full: hand it over now, the rest follows with the wait
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  void arm_receive(UringConnection& c) {
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_recvmsg_multishot(sqe, c.fd, &receive_header_, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = buffer_group;
    io_uring_sqe_set_data64(sqe, tag(c, op_recv));
    c.receiving = true;
  }

  void submit_send(UringConnection& c) {
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_send(sqe, c.fd, c.writing.data() + c.write_offset, c.writing.size() - c.write_offset, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(c, op_send));
    c.sending = true;
  }

  void arm_wake() {
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof wake_value_, 0);
    io_uring_sqe_set_data64(sqe, op_wake);
  }

  void run(std::promise<std::optional<std::string>>& ready) {
    if (auto error = init_ring(ring_)) {
      ready.set_value(std::move(error));
      return;
    }
    if (auto error = buffers_.init(ring_, buffer_count_, buffer_bytes)) {
      io_uring_queue_exit(&ring_);
      ready.set_value(std::move(error));
      return;
    }
    io_uring_register_ring_fd(&ring_);  // saves an fd lookup per enter where supported
    ready.set_value(std::nullopt);
    arm_wake();
    const std::int64_t tick_ns = std::int64_t{engine_.options().tick_us} * 1000;
    while (!stopping_) {
      // With a tick, sleep until the next send (on the tick's grid), at most one tick, or
      // until a batch of completions is waiting; receive times come from the kernel, so
      // waiting costs them nothing. Without one, wake for each completion.
      std::int64_t wake_ns = timer_ns_;
      if (tick_ns > 0) {
        const std::int64_t latest = to_ns(Clock::now()) + tick_ns;
        wake_ns = wake_ns < 0 ? latest : std::min(wake_ns, latest);
      }
      io_uring_cqe* cqe = nullptr;
      const unsigned wait_for = tick_ns > 0 ? batch_completions : 1;
      int r;
      if (wake_ns >= 0) {
        const std::int64_t wait_ns = std::max<std::int64_t>(0, wake_ns - to_ns(Clock::now()));
        __kernel_timespec timeout{wait_ns / 1'000'000'000, wait_ns % 1'000'000'000};
        r = io_uring_submit_and_wait_timeout(&ring_, &cqe, wait_for, &timeout, nullptr);
      } else {
        r = io_uring_submit_and_wait(&ring_, wait_for);
      }
      if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
        std::fprintf(stderr, "loadgen: io_uring_enter failed: %s\n", std::strerror(-r));
        std::_Exit(1);
      }
      reap();
      if (timer_ns_ >= 0 && to_ns(Clock::now()) >= timer_ns_) {
        auto fn = std::move(timer_fn_);
        cancel_timer();
        fn();
      }
    }
    io_uring_submit(&ring_);  // the cancels of the final close_all
    io_uring_queue_exit(&ring_);
  }

  // Every completion ready now; one clock read for the batch, which had all arrived by then.
  void reap() {
    const std::int64_t now = to_ns(Clock::now());
    sync_clocks();
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      const std::uint64_t data = io_uring_cqe_get_data64(cqe);
      // Null for the wake-up and for ignored completions: dereferenced only for the others.
      auto* c = reinterpret_cast<UringConnection*>(data & ~std::uint64_t{op_mask});
      switch (data & op_mask) {
        case op_connect:
          c->connecting = false;
          on_connected(*c, cqe->res < 0 ? -cqe->res : 0);
          break;
        case op_recv:
          on_receive(*c, cqe->res, cqe->flags, now);
          break;
        case op_send:
          on_sent(*c, cqe->res);
          break;
        case op_wake:
          run_posted();
          break;
        default:
          break;
      }
    }
    io_uring_cq_advance(&ring_, seen);
  }

  void on_receive(UringConnection& c, int res, unsigned flags, std::int64_t now) {
    if (flags & IORING_CQE_F_BUFFER) {
      const unsigned id = flags >> IORING_CQE_BUFFER_SHIFT;
      char* buffer = buffers_.buffers + static_cast<std::size_t>(id) * buffer_bytes;
      // A recvmsg buffer: a header, the control messages (the receive time), then the bytes.
      io_uring_recvmsg_out* out = res > 0 ? io_uring_recvmsg_validate(buffer, res, &receive_header_) : nullptr;
      if (out && out->payloadlen > 0 && c.state == ConnectionState::open) {
        auto next = [&](cmsghdr* cmsg) { return io_uring_recvmsg_cmsg_nexthdr(out, &receive_header_, cmsg); };
        const std::int64_t arrived = receive_time(io_uring_recvmsg_cmsg_firsthdr(out, &receive_header_), next, now);
        on_bytes(c,
                 std::string_view(static_cast<char*>(io_uring_recvmsg_payload(out, &receive_header_)), out->payloadlen),
                 arrived);
      }
      if (out && out->payloadlen == 0) res = 0;  // end of stream: no bytes, only the header
      if (res > 0 && !out) res = -EPROTO;        // not what recvmsg writes: give up on it
      // Parsed (a partial line was copied), so the buffer goes straight back.
      io_uring_buf_ring_add(buffers_.ring, buffer, buffer_bytes, static_cast<unsigned short>(id),
                            io_uring_buf_ring_mask(buffer_count_), 0);
      io_uring_buf_ring_advance(buffers_.ring, 1);
    }
    const bool more = flags & IORING_CQE_F_MORE;
    if (!more) c.receiving = false;
    if (c.state != ConnectionState::open) return;
    if (res == 0 || (res < 0 && res != -ENOBUFS)) {
      close(c);  // the server closed, or the connection failed
      return;
    }
    if (!more) arm_receive(c);  // this was the multishot's last completion: nothing follows it
  }

  void on_sent(UringConnection& c, int res) {
    c.sending = false;
    if (c.state != ConnectionState::open || res < 0) {
      c.writing.clear();
      close(c);
      return;
    }
    c.write_offset += static_cast<std::size_t>(res);
    if (c.write_offset < c.writing.size()) {
      submit_send(c);  // a short send: the rest before anything queued after it
      return;
    }
    c.writing.clear();
    if (!c.queued.empty()) write_queued(c);
  }

  void run_posted() {
    {
      std::lock_guard lock(post_mutex_);
      running_.swap(posted_);
    }
    for (auto& fn : running_) fn();
    running_.clear();
    if (!stopping_) arm_wake();
  }

  io_uring ring_{};
  // What every multishot recvmsg asks for: no address, room for the receive time. The
  // kernel reads it when the request is submitted.
  msghdr receive_header_{nullptr, 0, nullptr, 0, nullptr, receive_time_control_bytes, 0};
  const unsigned buffer_count_;  // a power of two
  BufferRing buffers_;
  int wake_fd_ = -1;
  std::uint64_t wake_value_ = 0;
  std::mutex post_mutex_;
  std::vector<std::function<void()>> posted_, running_;
  std::int64_t timer_ns_ = -1;  // -1: no timer
  std::function<void()> timer_fn_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Worker> make_uring_worker(Engine& engine, unsigned index) {
  return std::make_unique<UringWorker>(engine, index);
}

std::optional<std::string> uring_unavailable() {
  std::ifstream disabled_file("/proc/sys/kernel/io_uring_disabled");
  int disabled = 0;
  if (disabled_file >> disabled && disabled == 2) return "disabled by sysctl kernel.io_uring_disabled=2";
  io_uring ring{};
  if (auto error = init_ring(ring)) return error;
  BufferRing buffers;
  auto error = buffers.init(ring, 1, 64);
  io_uring_queue_exit(&ring);
  return error;
}

}  // namespace loadgen
