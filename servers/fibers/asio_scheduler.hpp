#pragma once
// Fibers and an Asio io_context on one thread (docs/fibers.md).
//
// Boost.Fiber lets a thread swap in its own scheduling algorithm. This one keeps the
// ready fibers in a FIFO, as round_robin does, and gives the io_context a turn whenever
// the fiber scheduler's own dispatcher fiber runs:
//
// - Fibers ready: the dispatcher fiber is itself in the FIFO (Boost re-queues it each
//   time it resumes a fiber), so once per round over the ready fibers it calls
//   pick_next(); there we poll() the io_context without blocking. Completion handlers
//   run then, on the dispatcher's stack, and make the fibers they complete ready.
// - No fiber ready: Boost calls suspend_until(deadline of the earliest sleeping fiber).
//   We sleep inside io_context::run_one() (or run_one_until() that deadline), so an idle
//   thread sits in epoll_wait and uses no CPU; the first completion wakes it. pick_next()
//   does not poll first: run_one() gives the io_context its turn, and a poll() just
//   before it would cost one more epoll_wait for nothing.
// - Each time the dispatcher comes round, before the io_context's turn, it calls the
//   thread's round end (set_round_end), if any: by then every fiber that was ready has
//   run, so a server can write there, once per round, what all of them produced
//   (chat-fibers' write round).
// - notify() (another thread made a fiber of ours ready, or the scheduler is shutting
//   down) posts an empty handler, which ends that run_one().
//
// One thread only: every fiber, every completion handler and the io_context run on the
// thread that installed the scheduler. So fibers need no locks among themselves.

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/fiber/algo/algorithm.hpp>
#include <boost/fiber/context.hpp>
#include <boost/fiber/operations.hpp>
#include <boost/fiber/scheduler.hpp>
#include <chrono>
#include <functional>
#include <memory>

namespace fiberio {

class AsioScheduler final : public boost::fibers::algo::algorithm {
 public:
  // The scheduler shares ownership of the io_context: Boost destroys the scheduler when
  // the thread ends, and its last notify() must still find the io_context alive.
  explicit AsioScheduler(std::shared_ptr<boost::asio::io_context> io)
      : io_(std::move(io)), work_(io_->get_executor()) {
    current() = this;
  }
  ~AsioScheduler() override { current() = nullptr; }

  // This thread's scheduler, if it uses one.
  static AsioScheduler*& current() noexcept {
    thread_local AsioScheduler* scheduler = nullptr;
    return scheduler;
  }

  // Called on the dispatcher once per round (above); it must not suspend. Empty: none.
  // The scheduler lives until the thread ends, so clear it before what it calls is gone.
  void set_round_end(std::function<void()> round_end) { round_end_ = std::move(round_end); }

  AsioScheduler(const AsioScheduler&) = delete;
  AsioScheduler& operator=(const AsioScheduler&) = delete;

  void awakened(boost::fibers::context* fiber) noexcept override { fiber->ready_link(ready_); }

  boost::fibers::context* pick_next() noexcept override {
    // Only the dispatcher polls: handlers then run on its (default-sized) stack, never on
    // a small connection stack, and never in the middle of a fiber's own suspend().
    if (boost::fibers::context::active()->is_context(boost::fibers::type::dispatcher_context)) {
      if (round_end_) round_end_();
      if (!ready_.empty()) io_->poll();  // else suspend_until() follows, and runs it
    }
    if (ready_.empty()) return nullptr;
    boost::fibers::context* next = &ready_.front();
    ready_.pop_front();
    return next;
  }

  bool has_ready_fibers() const noexcept override { return !ready_.empty(); }

  void suspend_until(const std::chrono::steady_clock::time_point& deadline) noexcept override {
    // The work guard keeps run_one() from returning at once for lack of work, which
    // would make this a busy loop while every fiber waits on something else.
    if (deadline == std::chrono::steady_clock::time_point::max()) {
      io_->run_one();
    } else {
      io_->run_one_until(deadline);
    }
  }

  void notify() noexcept override {
    boost::asio::post(*io_, [] {});
  }

 private:
  std::shared_ptr<boost::asio::io_context> io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::function<void()> round_end_;
  boost::fibers::scheduler::ready_queue_type ready_;
};

// Makes the calling thread run its fibers and `io` together, as above. Call once per
// thread, before the thread creates its first fiber.
inline void use_asio_scheduler(std::shared_ptr<boost::asio::io_context> io) {
  boost::fibers::use_scheduling_algorithm<AsioScheduler>(std::move(io));
}

// The calling thread's round end (AsioScheduler::set_round_end); the thread must use the
// AsioScheduler.
inline void set_round_end(std::function<void()> round_end) {
  AsioScheduler::current()->set_round_end(std::move(round_end));
}

}  // namespace fiberio
