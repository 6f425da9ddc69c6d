#pragma once
// A completion token that makes an Asio operation block the calling fiber, not the
// thread (docs/fibers.md):
//
//   std::size_t n = socket.async_read_some(buffer, fiberio::yield);      // throws on error
//   std::size_t n = socket.async_read_some(buffer, fiberio::yield[ec]);  // sets ec
//
// The fiber starts the operation, then suspends; the completion handler, which the
// AsioScheduler runs on its dispatcher fiber, stores the result and makes the fiber
// ready again. The result lives on the waiting fiber's stack (a timeout adds Asio's
// small cancellation handler).
//
// Like the scheduler, it assumes one thread: the handler must run on the thread of the
// fiber that waits (true for an io_context run only by AsioScheduler).

#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>
#include <boost/fiber/condition_variable.hpp>
#include <boost/fiber/mutex.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>
#include <chrono>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace fiberio {

class Yield {
 public:
  using Clock = std::chrono::steady_clock;

  constexpr Yield() = default;

  // yield[ec]: report failure in ec instead of throwing.
  constexpr Yield operator[](boost::system::error_code& ec) const noexcept {
    Yield with_error = *this;
    with_error.error_ = &ec;
    return with_error;
  }
  // yield.with_timeout(d): an operation still pending after d is cancelled and fails
  // with asio::error::timed_out (the operation must support per-operation cancellation,
  // as Asio's socket operations do).
  Yield with_timeout(Clock::duration timeout) const noexcept {
    Yield with_deadline = *this;
    with_deadline.deadline_ = Clock::now() + timeout;
    return with_deadline;
  }

  boost::system::error_code* error() const noexcept { return error_; }
  const std::optional<Clock::time_point>& deadline() const noexcept { return deadline_; }

 private:
  boost::system::error_code* error_ = nullptr;
  std::optional<Clock::time_point> deadline_;
};

inline constexpr Yield yield;

namespace detail {

// Where an operation's result waits for its fiber: on that fiber's stack. The fiber
// mutex and condition variable are Boost.Fiber's documented way to park a fiber and
// wake it, timeouts included; on one thread the mutex is never contended.
template <class... Values>
struct Waiter {
  boost::fibers::mutex mutex;
  boost::fibers::condition_variable completed;
  bool done = false;
  boost::system::error_code error;
  std::optional<std::tuple<Values...>> values;
  boost::asio::cancellation_signal cancel;

  // Runs in the completion handler, on the scheduler's dispatcher fiber.
  void complete(boost::system::error_code ec, Values... v) {
    {
      std::lock_guard lock(mutex);
      error = ec;
      values.emplace(std::move(v)...);
      done = true;
    }
    completed.notify_one();
  }

  void wait(const std::optional<Yield::Clock::time_point>& deadline) {
    std::unique_lock lock(mutex);
    const auto is_done = [this] { return done; };
    if (!deadline) {
      completed.wait(lock, is_done);
      return;
    }
    if (completed.wait_until(lock, *deadline, is_done)) return;
    // Too late: cancel, then wait for the handler all the same. It always runs, and it
    // must not find this Waiter gone.
    cancel.emit(boost::asio::cancellation_type::terminal);
    completed.wait(lock, is_done);
    if (error == boost::asio::error::operation_aborted) error = boost::asio::error::timed_out;
  }
};

template <class... Values>
struct Handler {
  Waiter<Values...>* waiter;
  bool cancellable;

  using cancellation_slot_type = boost::asio::cancellation_slot;
  // Only an operation with a deadline gets a slot: Asio then registers nothing for the
  // others.
  cancellation_slot_type get_cancellation_slot() const noexcept {
    return cancellable ? waiter->cancel.slot() : cancellation_slot_type();
  }

  void operator()(boost::system::error_code ec, Values... values) {
    waiter->complete(ec, std::move(values)...);
  }
};

}  // namespace detail
}  // namespace fiberio

// Tells Asio what `yield` means for an operation whose handler takes (error_code,
// Values...): start it with our Handler, wait, then return the value (if any).
template <class... Values>
class boost::asio::async_result<fiberio::Yield, void(boost::system::error_code, Values...)> {
  static_assert(sizeof...(Values) <= 1, "fiberio::yield supports (error_code[, value]) only");

 public:
  using return_type = std::conditional_t<sizeof...(Values) == 0, void,
                                         std::tuple_element_t<0, std::tuple<Values..., void>>>;

  template <class Initiation, class... Args>
  static return_type initiate(Initiation&& initiation, fiberio::Yield token, Args&&... args) {
    fiberio::detail::Waiter<std::decay_t<Values>...> waiter;
    std::forward<Initiation>(initiation)(
        fiberio::detail::Handler<std::decay_t<Values>...>{&waiter, token.deadline().has_value()},
        std::forward<Args>(args)...);
    waiter.wait(token.deadline());
    if (token.error()) {
      *token.error() = waiter.error;
    } else if (waiter.error) {
      throw boost::system::system_error(waiter.error);
    }
    if constexpr (sizeof...(Values) == 1) return std::move(std::get<0>(*waiter.values));
  }
};
