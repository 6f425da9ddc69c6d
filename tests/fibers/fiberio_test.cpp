// The scheduler that runs fibers on an io_context (asio_scheduler.hpp) and the yield
// token (yield.hpp), over real timers and loopback sockets.

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/fiber/fiber.hpp>
#include <boost/fiber/operations.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "asio_scheduler.hpp"
#include "yield.hpp"

namespace {

using boost::asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A scheduler belongs to its thread for good, so each test gets a fresh thread.
template <class Body>
void on_fiber_thread(Body body) {
  std::thread([&] {
    auto io = std::make_shared<boost::asio::io_context>(1);
    fiberio::use_asio_scheduler(io);
    body(*io);
  }).join();
}

// A connected loopback pair.
struct SocketPair {
  explicit SocketPair(boost::asio::io_context& io) : a(io), b(io) {
    tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    a.connect(acceptor.local_endpoint());
    b = acceptor.accept();
  }
  tcp::socket a;
  tcp::socket b;
};

double thread_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

TEST(AsioScheduler, FiberWaitsOnTimer) {
  on_fiber_thread([](boost::asio::io_context& io) {
    const auto start = Clock::now();
    boost::fibers::fiber waiter([&] {
      boost::asio::steady_timer timer(io, 50ms);
      timer.async_wait(fiberio::yield);
    });
    waiter.join();
    EXPECT_GE(Clock::now() - start, 50ms);
  });
}

TEST(AsioScheduler, FiberSleepsOnFiberClock) {
  // this_fiber::sleep_for goes through suspend_until(deadline): run_one_until().
  on_fiber_thread([](boost::asio::io_context&) {
    const auto start = Clock::now();
    boost::fibers::fiber sleeper([] { boost::this_fiber::sleep_for(50ms); });
    sleeper.join();
    const auto took = Clock::now() - start;
    EXPECT_GE(took, 50ms);
    EXPECT_LT(took, 5s);
  });
}

TEST(Yield, FiberWaitsOnSocketRead) {
  on_fiber_thread([](boost::asio::io_context& io) {
    SocketPair pair(io);
    std::string received;
    boost::fibers::fiber reader([&] {
      char buffer[64];
      const std::size_t n = pair.b.async_read_some(boost::asio::buffer(buffer), fiberio::yield);
      received.assign(buffer, n);
    });
    boost::fibers::fiber writer([&] {
      boost::this_fiber::sleep_for(20ms);  // the reader is already waiting
      boost::asio::async_write(pair.a, boost::asio::buffer(std::string_view("hello")),
                               fiberio::yield);
    });
    reader.join();
    writer.join();
    EXPECT_EQ(received, "hello");
  });
}

TEST(Yield, FiberWaitsOnWriteUntilPeerReads) {
  // 16 MiB is more than loopback socket buffers hold: the writer must wait for the
  // reader, and both must make progress in turn on the one thread.
  on_fiber_thread([](boost::asio::io_context& io) {
    SocketPair pair(io);
    const std::string payload(16 << 20, 'x');
    std::size_t written = 0;
    std::size_t read = 0;
    boost::fibers::fiber writer([&] {
      written = boost::asio::async_write(pair.a, boost::asio::buffer(payload), fiberio::yield);
    });
    boost::fibers::fiber reader([&] {
      std::vector<char> buffer(64 * 1024);
      while (read < payload.size()) {
        read += pair.b.async_read_some(boost::asio::buffer(buffer), fiberio::yield);
      }
    });
    writer.join();
    reader.join();
    EXPECT_EQ(written, payload.size());
    EXPECT_EQ(read, payload.size());
  });
}

TEST(Yield, ReportsErrorsInErrorCodeOrThrows) {
  on_fiber_thread([](boost::asio::io_context& io) {
    SocketPair pair(io);
    pair.a.close();
    boost::fibers::fiber reader([&] {
      char buffer[16];
      error_code ec;
      pair.b.async_read_some(boost::asio::buffer(buffer), fiberio::yield[ec]);
      EXPECT_EQ(ec, boost::asio::error::eof);
      // Not a second read after EOF: Asio 1.26 waits for a readiness edge that never
      // comes. A closed socket fails at once.
      pair.b.close();
      EXPECT_THROW(pair.b.async_read_some(boost::asio::buffer(buffer), fiberio::yield),
                   boost::system::system_error);
    });
    reader.join();
  });
}

TEST(Yield, TimeoutCancelsTheOperation) {
  on_fiber_thread([](boost::asio::io_context& io) {
    SocketPair pair(io);
    error_code ec;
    const auto start = Clock::now();
    boost::fibers::fiber reader([&] {
      char buffer[16];
      pair.b.async_read_some(boost::asio::buffer(buffer), fiberio::yield.with_timeout(50ms)[ec]);
    });
    reader.join();
    EXPECT_EQ(ec, boost::asio::error::timed_out);
    EXPECT_GE(Clock::now() - start, 50ms);
    // The socket still works afterwards: only that operation was cancelled.
    boost::fibers::fiber again([&] {
      boost::asio::async_write(pair.a, boost::asio::buffer(std::string_view("x")), fiberio::yield);
      char buffer[16];
      EXPECT_EQ(pair.b.async_read_some(boost::asio::buffer(buffer), fiberio::yield.with_timeout(5s)),
                1u);
    });
    again.join();
  });
}

TEST(AsioScheduler, ManyFibersInterleave) {
  // 100 fibers each wait on a timer 5 times; every step of every fiber must happen, and
  // the steps of different fibers interleave instead of running one fiber to its end.
  on_fiber_thread([](boost::asio::io_context& io) {
    constexpr int fibers = 100;
    constexpr int steps = 5;
    std::vector<int> order;
    std::vector<boost::fibers::fiber> all;
    for (int id = 0; id < fibers; ++id) {
      all.emplace_back([&io, &order, id] {
        boost::asio::steady_timer timer(io);
        for (int step = 0; step < steps; ++step) {
          timer.expires_after(1ms);
          timer.async_wait(fiberio::yield);
          order.push_back(id);
        }
      });
    }
    for (auto& fiber : all) fiber.join();
    ASSERT_EQ(order.size(), static_cast<std::size_t>(fibers * steps));
    // Fiber 0's last step comes after some other fiber's first.
    const auto last_of_0 = std::find(order.rbegin(), order.rend(), 0).base() - order.begin();
    const auto first_of_99 = std::find(order.begin(), order.end(), 99) - order.begin();
    EXPECT_LT(first_of_99, last_of_0);
  });
}

TEST(AsioScheduler, BusyFibersDoNotStarveTheIoContext) {
  // A fiber that is always ready (it only yields) must not keep completions from
  // running: the io_context gets a turn every round of the ready queue.
  on_fiber_thread([](boost::asio::io_context& io) {
    bool fired = false;
    boost::asio::steady_timer timer(io, 10ms);
    timer.async_wait([&](error_code) { fired = true; });
    int rounds = 0;
    boost::fibers::fiber busy([&] {
      while (!fired && rounds < 10'000'000) {
        ++rounds;
        boost::this_fiber::yield();
      }
    });
    busy.join();
    EXPECT_TRUE(fired);
  });
}

TEST(AsioScheduler, RoundEndRunsOnceTheReadyFibersHaveRun) {
  // 10 fibers wait on timers that expire together, so their completions come in one turn
  // of the io_context and make all 10 ready at once. The round end must see either none
  // or all of them done, never some: it runs between rounds, not between fibers.
  on_fiber_thread([](boost::asio::io_context& io) {
    constexpr std::size_t fibers = 10;
    std::size_t done = 0;
    std::vector<std::size_t> seen;  // `done` at each round end where it changed
    fiberio::set_round_end([&] {
      if (seen.empty() || seen.back() != done) seen.push_back(done);
    });
    const auto at = Clock::now() + 20ms;
    std::vector<boost::fibers::fiber> all;
    for (std::size_t i = 0; i < fibers; ++i) {
      all.emplace_back([&] {
        boost::asio::steady_timer timer(io, at);
        timer.async_wait(fiberio::yield);
        ++done;
      });
    }
    for (auto& fiber : all) fiber.join();
    boost::this_fiber::yield();  // one more round: the dispatcher comes round again
    fiberio::set_round_end({});
    EXPECT_EQ(seen, (std::vector<std::size_t>{0, fibers}));
  });
}

TEST(AsioScheduler, IdleSchedulerDoesNotSpin) {
  // For 2 s one fiber waits on an Asio timer and another sleeps on the fiber clock:
  // the thread must sleep in epoll_wait, not poll. A tolerant bound: a behaviour check,
  // not a performance target.
  on_fiber_thread([](boost::asio::io_context& io) {
    const double cpu_before = thread_cpu_seconds();
    boost::fibers::fiber on_timer([&] {
      boost::asio::steady_timer timer(io, 2s);
      timer.async_wait(fiberio::yield);
    });
    boost::fibers::fiber on_clock([] { boost::this_fiber::sleep_for(2s); });
    on_timer.join();
    on_clock.join();
    EXPECT_LT(thread_cpu_seconds() - cpu_before, 0.1);
  });
}

}  // namespace
