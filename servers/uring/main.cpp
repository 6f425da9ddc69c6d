// chat-uring: the chat server written directly on liburing, one ring, one thread.
// Where chat-asio waits for readiness and then makes a system call per read and per
// write, this variant hands the kernel standing requests and collects their completions:
// one multishot accept, one multishot receive per connection, and at the end of every
// round one sendmsg per receiver with output, all submitted in the io_uring_enter that
// also waits for the next completions.
//
// Idle memory is what a variant is judged on, so an idle connection owns no buffer: its
// multishot receive draws from a ring of buffers that every connection shares (provided
// buffers), and each buffer goes back to the ring as soon as its bytes are decoded. The
// write timeout is one sweep, as in chat-asio; nothing is armed per idle connection.

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/intrusive/list.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "chat/backoff.hpp"
#include "chat/hub.hpp"
#include "chat/line_decoder.hpp"
#include "chat/linger.hpp"
#include "chat/options.hpp"
#include "chat/outbox.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using Kind = chat::Outbox::Kind;

// ---- the ring: sizes, set-up, and the provided-buffer ring receives draw from.
constexpr unsigned kSubmissionEntries = 1024;  // more per round are submitted early, not lost
constexpr unsigned kCompletionEntries = 8192;  // the kernel holds any excess (IORING_FEAT_NODROP)
// Shared by every connection; kBuffers a power of two. The test build chat-uring-starved
// has 2 x 64 B, so that every burst runs the ring dry (tests/conformance/CMakeLists.txt).
#ifndef CHAT_URING_BUFFERS
#define CHAT_URING_BUFFERS 512
#define CHAT_URING_BUFFER_BYTES 4096
#endif
constexpr unsigned kBuffers = CHAT_URING_BUFFERS;
constexpr unsigned kBufferBytes = CHAT_URING_BUFFER_BYTES;
constexpr unsigned short kBufferGroup = 0;
constexpr std::size_t kMaxBuffers = 256;  // iovecs per sendmsg, under IOV_MAX (1024)

std::string errno_text(const char* what, int error) { return std::string(what) + ": " + std::strerror(error); }

// No SQPOLL: its kernel thread would spin on a core that the CPU figures do not charge to
// the server. SINGLE_ISSUER | DEFER_TASKRUN (Linux 6.1) run completions in this thread
// when it waits rather than as interrupting task work; Linux 6.0 lacks DEFER_TASKRUN but
// has everything else used here (multishot receive, provided-buffer rings).
void init_ring(io_uring& ring) {
  const unsigned preferred[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                                IORING_SETUP_SINGLE_ISSUER};
  int r = -EINVAL;
  for (const unsigned flags : preferred) {
    io_uring_params params{};
    params.flags = flags | IORING_SETUP_CQSIZE;
    params.cq_entries = kCompletionEntries;
    r = io_uring_queue_init_params(kSubmissionEntries, &ring, &params);
    if (r != -EINVAL) break;
  }
  if (r == -EINVAL) throw std::runtime_error("io_uring: this kernel is older than Linux 6.0 (multishot receive)");
  if (r < 0) throw chat::IoUringUnavailable(-r);
  io_uring_register_ring_fd(&ring);  // saves a descriptor lookup per enter where supported
}

// kBuffers buffers of kBufferBytes that the kernel picks from for every receive. liburing
// 2.3 has no io_uring_setup_buf_ring: map the ring, register it, fill it.
class BufferRing {
 public:
  explicit BufferRing(io_uring& uring) {
    ring_bytes_ = kBuffers * sizeof(io_uring_buf);
    void* memory = ::mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (memory == MAP_FAILED) throw std::runtime_error(errno_text("mmap", errno));
    ring_ = static_cast<io_uring_buf_ring*>(memory);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(memory);
    reg.ring_entries = kBuffers;
    reg.bgid = kBufferGroup;
    if (const int r = io_uring_register_buf_ring(&uring, &reg, 0); r < 0) {
      ::munmap(ring_, ring_bytes_);
      throw std::runtime_error(errno_text("io_uring_register_buf_ring", -r));
    }
    io_uring_buf_ring_init(ring_);
    buffers_ = std::make_unique<char[]>(std::size_t{kBuffers} * kBufferBytes);
    for (unsigned id = 0; id < kBuffers; ++id) give_back(id, static_cast<int>(id));
    io_uring_buf_ring_advance(ring_, kBuffers);
  }
  ~BufferRing() { ::munmap(ring_, ring_bytes_); }
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  std::string_view bytes(unsigned id, std::size_t size) const {
    return {buffers_.get() + std::size_t{id} * kBufferBytes, size};
  }
  // The bytes are decoded (a partial line was copied): the kernel may fill it again.
  void recycle(unsigned id) {
    give_back(id, 0);
    io_uring_buf_ring_advance(ring_, 1);
  }

 private:
  void give_back(unsigned id, int offset) {
    io_uring_buf_ring_add(ring_, buffers_.get() + std::size_t{id} * kBufferBytes, kBufferBytes,
                          static_cast<unsigned short>(id), io_uring_buf_ring_mask(kBuffers), offset);
  }

  io_uring_buf_ring* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  std::unique_ptr<char[]> buffers_;
};

// user_data: the connection's address with the operation in its low bits (Session is
// 8-aligned). 0: a completion nobody waits for (a cancel's own).
enum Op : std::uintptr_t { op_ignore = 0, op_accept = 1, op_recv = 2, op_send = 3, op_signal = 4, op_mask = 7 };

class Session;
using Hub = chat::Hub<Session>;
namespace bi = boost::intrusive;
using SessionHook = bi::list_base_hook<bi::link_mode<bi::auto_unlink>>;
using SessionList = bi::list<Session, bi::constant_time_size<false>>;
struct Loop;

// One sendmsg in flight: the kernel reads its iovecs until it completes. Held only while
// output is pending, and recycled (Loop::spare_sends).
struct Send {
  msghdr header{};
  std::vector<iovec> iov;
};

// A connection whose close is decided (chat/linger.hpp), as chat::net::Closer is for the
// Asio variants: out of every room, counted in `lingering`, still writing what is queued.
struct Closing {
  chat::Linger linger;
  std::multimap<Clock::time_point, Session*>::iterator deadline;  // once lingering
  bool eof = false;  // the peer ended its stream: nothing more to read
};

// ---- session: one connection; its standing receive and its one send per round.
class Session : public chat::Participant, public SessionHook {
 public:
  Session(Loop& loop, int fd);
  ~Session();
  void start();
  // A client over --max-clients: told why, then closed the lingering way.
  void refuse();

  void deliver(const chat::Message& message, Kind kind);
  // Closes the connection at once; whatever is queued is dropped.
  void stop();
  // Output pending and no byte taken for --write-timeout-ms: a slow receiver.
  void check_write_timeout(Clock::time_point now);
  // Submits one sendmsg of everything queued (up to kMaxBuffers messages), once per round.
  void send();
  void on_receive(int result, unsigned flags);
  void on_sent(int result);
  void on_linger_deadline() { close(); }
  // Freed once closed, out of its room, and the kernel holds no request of it.
  bool releasable() const { return fd_ < 0 && !receiving_ && !sending_ && !room(); }

 private:
  void receive();
  void on_bytes(std::string_view bytes);
  void end_of_stream();
  void finish(bool eof);
  void give_up_output();
  void drained(Clock::time_point now);
  void close();
  void cancel(Op op);
  std::uint64_t tag(Op op) { return reinterpret_cast<std::uintptr_t>(this) | op; }

  Loop& loop_;
  int fd_;                        // -1 once closed
  chat::LineDecoder decoder_;
  chat::Outbox outbox_;
  Clock::time_point progress_{};  // when output became pending or the peer last took bytes
  std::unique_ptr<Send> send_;    // while a sendmsg is in flight
  std::unique_ptr<Closing> closing_;
  bool receiving_ = false;        // the multishot receive is armed
  bool sending_ = false;          // a sendmsg is in flight
  bool writing_ = false;          // output pending: a send this round or in flight
  bool abandon_output_ = false;   // drop what is queued once the send in flight ends
};

// The event loop and what it owns: the ring and what the sessions share. One thread runs
// everything, so nothing here is locked.
struct Loop {
  chat::ServerOptions options;
  Hub hub{"uring"};
  io_uring ring{};
  std::optional<BufferRing> buffers;
  SessionList sessions;  // open or closing, for the sweep and shutdown
  SessionList closed;    // closed, waiting for the kernel to let go of their requests
  // The end of the round: sessions that left their room mid-walk, and receivers to write to.
  std::vector<Session*> leaving;
  std::vector<Session*> flushing;
  std::multimap<Clock::time_point, Session*> linger_deadlines;
  std::vector<std::unique_ptr<Send>> spare_sends;

  io_uring_sqe* next_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    while (!sqe) {  // the queue is full: hand it over now, the rest follows with the wait
      io_uring_submit(&ring);
      sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
  }
};

Session::Session(Loop& loop, int fd)
    : loop_(loop), fd_(fd), decoder_(loop.options.max_line), outbox_(loop.options.max_pending) {
  const int on = 1;  // no Nagle delay: lines are small, and latency is measured
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  loop_.sessions.push_back(*this);
}

Session::~Session() {
  if (send_) loop_.spare_sends.push_back(std::move(send_));
}

void Session::start() {
  loop_.hub.enter(*this);
  receive();
}

void Session::refuse() {
  ++loop_.hub.counters().rejected;
  ++loop_.hub.counters().lingering;
  closing_ = std::make_unique<Closing>(chat::Linger(loop_.options, true));
  (void)outbox_.push(chat::replies::server_full(), Kind::reply);
  writing_ = true;
  progress_ = Clock::now();
  loop_.flushing.push_back(this);
  receive();
}

void Session::stop() {
  if (fd_ < 0) return;
  if (closing_) return close();
  loop_.leaving.push_back(this);  // stop() may run inside hub.handle(), which is walking
                                    // that room's members: leave at the end of the round
  close();
}

// Closes the socket now. The requests still in flight hold it open in the kernel until
// their cancels complete; the session is freed after that (Loop::closed).
void Session::close() {
  if (fd_ < 0) return;
  if (closing_) {
    --loop_.hub.counters().lingering;
    if (closing_->linger.lingering()) loop_.linger_deadlines.erase(closing_->deadline);
  }
  if (receiving_) cancel(op_recv);
  if (sending_) cancel(op_send);
  ::close(fd_);
  fd_ = -1;
  writing_ = false;
  unlink();
  loop_.closed.push_back(*this);
}

void Session::cancel(Op op) {
  io_uring_sqe* sqe = loop_.next_sqe();
  io_uring_prep_cancel64(sqe, tag(op), 0);
  io_uring_sqe_set_data64(sqe, op_ignore);
}

// ---- deliver: queue a message; the end of the round sends it with everything else queued.
void Session::deliver(const chat::Message& message, Kind kind) {
  if (fd_ < 0 || closing_) return;
  if (!outbox_.push(message, kind)) {  // over --max-pending
    ++loop_.hub.counters().slow_disconnects;
    return stop();
  }
  if (writing_) return;
  writing_ = true;
  progress_ = Clock::now();
  loop_.flushing.push_back(this);
}

void Session::check_write_timeout(Clock::time_point now) {
  if (fd_ < 0 || !writing_ || abandon_output_ || now - progress_ < loop_.options.write_timeout) return;
  ++loop_.hub.counters().slow_disconnects;
  if (!closing_) return stop();
  give_up_output();  // a closing session still lingers, for the reply already sent
}

// ---- receive: one multishot receive, armed again whenever the kernel ends it.
void Session::receive() {
  io_uring_sqe* sqe = loop_.next_sqe();
  io_uring_prep_recv_multishot(sqe, fd_, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufferGroup;
  io_uring_sqe_set_data64(sqe, tag(op_recv));
  receiving_ = true;
}

// The kernel ends a multishot (no IORING_CQE_F_MORE) when the buffers run out (ENOBUFS),
// at the end of the stream, on an error, or for reasons of its own. The bytes not yet
// received stay in the socket, and this completion is the request's last, so arming a new
// one loses and reorders nothing; by then the buffers of this round are back in the ring.
void Session::on_receive(int result, unsigned flags) {
  if (flags & IORING_CQE_F_BUFFER) {
    const unsigned id = flags >> IORING_CQE_BUFFER_SHIFT;
    if (result > 0 && fd_ >= 0) on_bytes(loop_.buffers->bytes(id, static_cast<std::size_t>(result)));
    loop_.buffers->recycle(id);
  }
  const bool more = flags & IORING_CQE_F_MORE;
  if (!more) receiving_ = false;
  if (fd_ < 0) return;
  if (result == 0) return end_of_stream();
  if (result < 0 && result != -ENOBUFS) return stop();  // reset: nothing more reaches the peer
  if (!more) receive();
}

void Session::end_of_stream() {
  if (!closing_) return finish(true);
  closing_->eof = true;
  if (closing_->linger.lingering()) close();  // all done: the peer has read its FIN
}                                             // else close once drained

// Bytes from the peer: lines to handle while open, input to discard while closing.
void Session::on_bytes(std::string_view bytes) {
  loop_.hub.counters().bytes_in += bytes.size();
  if (closing_) {
    if (!closing_->linger.discarded(bytes.size(), Clock::now())) close();
    return;
  }
  const auto status = decoder_.feed(bytes, [this](auto line) {
    const auto outcome = loop_.hub.handle(*this, line, [](Session& receiver, auto& message) {
      receiver.deliver(message, Kind::chat);
    });
    if (outcome.reply) deliver(outcome.reply, Kind::reply);
    return !outcome.quit && fd_ >= 0;
  });
  if (fd_ < 0) return;
  if (status == chat::LineDecoder::Status::line_too_long) {
    deliver(chat::replies::line_too_long(), Kind::reply);
  }
  if (status != chat::LineDecoder::Status::ok) finish(false);
}

// /quit, a line too long or the end of the stream: leave the room, write what is queued,
// linger and close (chat/linger.hpp). The receive stays armed to discard input meanwhile.
void Session::finish(bool eof) {
  loop_.hub.exit(*this);
  ++loop_.hub.counters().lingering;
  closing_ = std::make_unique<Closing>(chat::Linger(loop_.options));
  closing_->eof = eof;
  if (!writing_) drained(Clock::now());
}

// The write timeout gave up on a closing session's output. The kernel may still be
// reading the iovecs of a send in flight: cancel it and drop the output once it ends.
void Session::give_up_output() {
  if (sending_) {
    abandon_output_ = true;
    return cancel(op_send);
  }
  outbox_.clear();
  writing_ = false;
  drained(Clock::now());
}

// Output written, or given up on: FIN after it, then the linger deadline.
void Session::drained(Clock::time_point now) {
  if (closing_->eof) return close();
  ::shutdown(fd_, SHUT_WR);
  closing_->linger.drained(now);
  closing_->deadline = loop_.linger_deadlines.emplace(closing_->linger.deadline(), this);
}

// ---- send: one sendmsg of everything queued; what it did not take goes next round.
void Session::send() {
  if (fd_ < 0 || sending_ || outbox_.empty()) return;
  if (!loop_.spare_sends.empty()) {
    send_ = std::move(loop_.spare_sends.back());
    loop_.spare_sends.pop_back();
  } else {
    send_ = std::make_unique<Send>();
  }
  std::array<std::string_view, kMaxBuffers> views;
  const std::size_t count = outbox_.gather(views);
  send_->iov.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    send_->iov[i] = {const_cast<char*>(views[i].data()), views[i].size()};
  }
  send_->header.msg_iov = send_->iov.data();
  send_->header.msg_iovlen = count;
  io_uring_sqe* sqe = loop_.next_sqe();
  io_uring_prep_sendmsg(sqe, fd_, &send_->header, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, tag(op_send));
  sending_ = true;
}

void Session::on_sent(int result) {
  sending_ = false;
  loop_.spare_sends.push_back(std::move(send_));
  if (fd_ < 0) return;
  auto& counts = loop_.hub.counters();
  if (result > 0) {
    counts.bytes_out += static_cast<std::size_t>(result);
    counts.lines_out += outbox_.consume(static_cast<std::size_t>(result));
    progress_ = Clock::now();
  }
  if (abandon_output_) {
    abandon_output_ = false;
    return give_up_output();
  }
  if (result < 0) return stop();  // the peer is gone
  if (!outbox_.empty()) {
    loop_.flushing.push_back(this);
    return;
  }
  writing_ = false;
  if (closing_) drained(progress_);
}

// ---- listening socket, accept loop, write-timeout sweep, and shutdown on SIGINT/SIGTERM.
int listen_on(const chat::ServerOptions& options, sockaddr_storage& address) {
  address = {};
  socklen_t size;
  if (auto* v4 = reinterpret_cast<sockaddr_in*>(&address); ::inet_pton(AF_INET, options.bind.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(options.port);
    size = sizeof *v4;
  } else {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    if (::inet_pton(AF_INET6, options.bind.c_str(), &v6->sin6_addr) != 1) {
      throw chat::ListenError(options, "not an IP address");
    }
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(options.port);
    size = sizeof *v6;
  }
  const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw chat::ListenError(options, std::strerror(errno));
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  // A deep backlog: a burst of thousands of connects must not be dropped while the
  // accept loop catches up.
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), size) < 0 || ::listen(fd, SOMAXCONN) < 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) < 0) {
    const int error = errno;
    ::close(fd);
    throw chat::ListenError(options, std::strerror(error));
  }
  return fd;
}

void announce(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = "";
  std::uint16_t port;
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
    port = ntohs(v4.sin_port);
  } else {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    port = ntohs(v6.sin6_port);
  }
  chat::announce_listening(text, port, "uring");
}

// The server: its one Loop, the listening socket and the signal; run() turns the loop.
class Server {
 public:
  explicit Server(const chat::ServerOptions& options) {
    loop_.options = options;
    // SIGINT/SIGTERM arrive as a completion on a signalfd, like any other event.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &signals, nullptr);
    signal_fd_ = ::signalfd(-1, &signals, SFD_CLOEXEC);
    if (signal_fd_ < 0) throw std::runtime_error(errno_text("signalfd", errno));
    init_ring(loop_.ring);
    ring_up_ = true;
    try {
      loop_.buffers.emplace(loop_.ring);
      sockaddr_storage address;
      listen_fd_ = listen_on(options, address);
      wait_for_signal();
      accept();
      next_sweep_ = Clock::now() + sweep_interval();
      io_uring_submit(&loop_.ring);
      announce(address);
    } catch (...) {
      release_all();
      throw;
    }
  }
  ~Server() { release_all(); }

  // ---- the loop: submit what the round queued and wait, in one io_uring_enter.
  void run() {
    while (!stopped_) {
      const auto wait = next_deadline() - Clock::now();
      const auto ns = std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count());
      __kernel_timespec timeout{ns / 1'000'000'000, ns % 1'000'000'000};
      io_uring_cqe* cqe = nullptr;
      const int r = io_uring_submit_and_wait_timeout(&loop_.ring, &cqe, 1, &timeout, nullptr);
      if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
        throw std::runtime_error(errno_text("io_uring_enter", -r));
      }
      reap();
      run_timers(Clock::now());
      end_round();
    }
  }

 private:
  // Every completion ready now.
  void reap() {
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&loop_.ring, head, cqe) {
      ++seen;
      const std::uint64_t data = io_uring_cqe_get_data64(cqe);
      // Null for the server's own requests: dereferenced only for a session's.
      auto* session = reinterpret_cast<Session*>(data & ~std::uint64_t{op_mask});
      switch (data & op_mask) {
        case op_accept: on_accept(cqe->res, cqe->flags); break;
        case op_recv: session->on_receive(cqe->res, cqe->flags); break;
        case op_send: session->on_sent(cqe->res); break;
        case op_signal: shutdown(); break;
        default: break;
      }
    }
    io_uring_cq_advance(&loop_.ring, seen);
  }

  // After every completion of the round: leave rooms, write, free what the kernel let go.
  void end_round() {
    for (Session* session : loop_.leaving) loop_.hub.exit(*session);
    loop_.leaving.clear();
    for (Session* session : loop_.flushing) session->send();
    loop_.flushing.clear();
    loop_.closed.remove_and_dispose_if([](const Session& s) { return s.releasable(); },
                                         [](Session* s) { delete s; });
  }

  void accept() {
    io_uring_sqe* sqe = loop_.next_sqe();
    io_uring_prep_multishot_accept(sqe, listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, op_accept);
    accepting_ = true;
  }

  void on_accept(int result, unsigned flags) {
    if (stopped_) {  // completed in the round that shut down
      if (result >= 0) ::close(result);
      return;
    }
    if (!(flags & IORING_CQE_F_MORE)) accepting_ = false;
    if (result < 0 && chat::is_resource_exhaustion(-result)) {
      // accept() would fail again at once: wait, keep serving, then try again. (The
      // kernel ends a multishot accept on any error; cancel it should it not.)
      if (accepting_) {
        io_uring_sqe* sqe = loop_.next_sqe();
        io_uring_prep_cancel64(sqe, op_accept, 0);
        io_uring_sqe_set_data64(sqe, op_ignore);
      }
      if (!backoff_until_) backoff_until_ = Clock::now() + backoff_.next();
      return;
    }
    if (result >= 0) {
      backoff_.reset();
      admit(result);
    }
    // Other errors (e.g. the peer aborted) belong to that connection only.
    if (!accepting_ && !backoff_until_) accept();
  }

  void admit(int fd) {
    auto* session = new Session(loop_, fd);
    if (chat::server_full(loop_.hub.counters(), loop_.options.max_clients)) return session->refuse();
    session->start();
  }

  std::chrono::milliseconds sweep_interval() const {
    return std::max(loop_.options.write_timeout / 10, std::chrono::milliseconds(1));
  }

  Clock::time_point next_deadline() const {
    auto next = next_sweep_;
    if (backoff_until_) next = std::min(next, *backoff_until_);
    if (!loop_.linger_deadlines.empty()) next = std::min(next, loop_.linger_deadlines.begin()->first);
    return next;
  }

  // The write timeout is one sweep over the sessions every tenth of it, as in chat-asio:
  // a stalled receiver goes at most a tenth of --write-timeout-ms late.
  void run_timers(Clock::time_point now) {
    if (stopped_) return;
    if (backoff_until_ && now >= *backoff_until_) {
      backoff_until_.reset();
      if (!accepting_) accept();
    }
    while (!loop_.linger_deadlines.empty() && loop_.linger_deadlines.begin()->first <= now) {
      loop_.linger_deadlines.begin()->second->on_linger_deadline();  // erases its entry
    }
    if (now >= next_sweep_) {
      // A session that times out moves to the closed list: step past it first.
      for (auto it = loop_.sessions.begin(); it != loop_.sessions.end();) (it++)->check_write_timeout(now);
      next_sweep_ = now + sweep_interval();
    }
  }

  void wait_for_signal() {
    io_uring_sqe* sqe = loop_.next_sqe();
    io_uring_prep_read(sqe, signal_fd_, &signal_info_, sizeof signal_info_, 0);
    io_uring_sqe_set_data64(sqe, op_signal);
  }

  void shutdown() {
    stopped_ = true;
    ::close(listen_fd_);  // the multishot accept ends with the ring
    listen_fd_ = -1;
    while (!loop_.sessions.empty()) loop_.sessions.front().stop();
    end_round();
    std::cerr << loop_.hub.stats() << std::endl;  // the final counters
  }

  // Tearing the ring down cancels every request: then the kernel references no session
  // and no buffer.
  void release_all() {
    while (!loop_.sessions.empty()) loop_.sessions.front().stop();
    for (Session* session : loop_.leaving) loop_.hub.exit(*session);
    loop_.leaving.clear();
    if (ring_up_) io_uring_queue_exit(&loop_.ring);
    ring_up_ = false;
    loop_.buffers.reset();
    loop_.closed.clear_and_dispose([](Session* s) { delete s; });
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    if (signal_fd_ >= 0) ::close(signal_fd_);
    signal_fd_ = -1;
  }

  Loop loop_;
  int listen_fd_ = -1;
  int signal_fd_ = -1;
  signalfd_siginfo signal_info_{};
  chat::Backoff backoff_;
  std::optional<Clock::time_point> backoff_until_;  // accepting again then
  Clock::time_point next_sweep_{};
  bool ring_up_ = false;
  bool accepting_ = false;  // the multishot accept is armed
  bool stopped_ = false;
};

}  // namespace

// ---- main
int main(int argc, char** argv) {
  const chat::ServerOptions options = chat::parse_server_options(argc, argv, "uring");
  try {
    Server server(options);
    server.run();
  } catch (const std::exception& error) {
    std::cerr << "chat-uring: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
