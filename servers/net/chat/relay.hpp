#pragma once
// A server on several threads (--threads N): one event loop (Loop) per thread, each with
// its own io_context, sessions, Hub and rooms; the Relay ties the loops' rooms together
// (docs/servers.md, "Several threads").
//
// A chat line reaches the sender's room-mates on its own thread at once (Hub::handle).
// For every other thread with members in that room, the line (one shared Message, no
// copy) and its room go into an outbound batch for that thread; once per round of the
// sender's io_context the batches are handed over, one post per destination thread
// however many lines and receivers they hold. The destination delivers each line to its
// own members of the room, with the same deliver() as a local line, so --max-pending and
// --write-timeout-ms hold per receiver on the receiver's thread. Per-sender order holds:
// a sender's lines go into one batch in order, and posts to one io_context run in order.
//
// Nothing on the relay path is locked. The registry of room names (one mutex) is touched
// only when a thread's first member enters a room or its last one leaves, and by /stats.
//
// Back-pressure between threads: a thread may have at most kCredit bytes of lines on their
// way to any one other thread (counted as they are batched, released by the destination
// once it has delivered them). Beyond that, may_read() says no and the thread's sessions
// wait (wait_for_credit) instead of reading, so the senders' kernel buffers fill and TCP
// slows them, as a sender on one thread is slowed by a thread that has no time to read.
// The destination posts the wake-up only when the source is waiting: per batch, the cost
// is one atomic add and one atomic subtract.

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "chat/counters.hpp"
#include "chat/hub.hpp"
#include "chat/message.hpp"
#include "chat/net.hpp"
#include "chat/rooms.hpp"

namespace chat {

// One room name across threads: which threads have members in it, and their Room.
// local[t] is set and cleared only by thread t (under the registry's lock); other threads
// only ask whether it is null, i.e. whether thread t needs the line at all.
struct SharedRoom {
  SharedRoom(std::string_view name, std::size_t threads)
      : name(name), local(std::make_unique<std::atomic<Room*>[]>(threads)) {}
  const std::string name;
  std::unique_ptr<std::atomic<Room*>[]> local;
};

namespace net {

template <class Session>
class Relay;

// What every Loop of a server shares: the room names, each Loop's Relay, and the
// connections accepted but not yet admitted by their Loop (--max-clients counts them).
template <class Session>
class Cluster {
 public:
  explicit Cluster(std::size_t threads) : relays_(threads) {}

  std::size_t threads() const noexcept { return relays_.size(); }
  Relay<Session>& relay(std::size_t thread) noexcept { return *relays_[thread]; }

  // Connections the server holds: every thread's clients and lingering ones, and those on
  // their way to a thread. Read by the accepting thread for --max-clients: a thread's
  // count goes up before the connection stops being in flight (release / acquire), so a
  // connection is never missed, only counted twice for an instant.
  std::uint64_t held() const noexcept {
    std::uint64_t sum = in_flight_.load(std::memory_order_acquire);
    for (const Relay<Session>* relay : relays_) {
      const auto& c = relay->hub().counters();
      sum += c.clients + c.lingering;
    }
    return sum;
  }
  void sent_to_thread() noexcept { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  void arrived_on_thread() noexcept { in_flight_.fetch_sub(1, std::memory_order_release); }

 private:
  friend class Relay<Session>;
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  std::vector<Relay<Session>*> relays_;
  std::atomic<std::uint64_t> in_flight_{0};
  mutable std::mutex rooms_mutex_;
  std::unordered_map<std::string, std::shared_ptr<SharedRoom>, Hash, std::equal_to<>> rooms_;
};

// One Loop's link to the other Loops. Constructed on any thread before the threads run;
// afterwards used only on its own thread, except receive(), which it posts to others.
template <class Session>
class Relay final : public Peers, public RoomLinks {
 public:
  using Hub = chat::Hub<Session, OwnedCount>;
  // deliver(receiver, message): queue a relayed chat line, as for a local one.
  using Deliver = std::function<void(Session&, const Message&)>;
  // write(): start the writes that deliveries so far are waiting for. Only for a server
  // whose writes are not a handler posted to the io_context (chat-fibers writes at the
  // end of its scheduler's round): one posted by deliver() runs before the next batch.
  using Write = std::function<void()>;

  // Bytes of relayed lines (their text and their place in a batch) one thread may have on
  // their way to one other thread before it stops reading. Far above what a thread hands
  // over in a round, so it binds only when a destination falls behind; a source may go
  // over it by the lines of one read (64 KiB of input), as it checks before each read.
  static constexpr std::size_t kCredit = std::size_t{256} << 10;

  Relay(Cluster<Session>& cluster, std::size_t thread, boost::asio::io_context& io, Hub& hub,
        Deliver deliver, Write write = {})
      : cluster_(cluster),
        thread_(thread),
        io_(io),
        hub_(hub),
        deliver_(std::move(deliver)),
        write_(std::move(write)),
        outbound_(cluster.threads()),
        outbound_bytes_(cluster.threads()),
        in_flight_(std::make_unique<std::atomic<std::size_t>[]>(cluster.threads())) {
    cluster_.relays_[thread_] = this;
    if (cluster_.threads() > 1) hub_.attach(*this, *this);  // else the hub stays on its own
  }

  Hub& hub() noexcept { return hub_; }
  const Hub& hub() const noexcept { return hub_; }
  boost::asio::io_context& io() noexcept { return io_; }

  // ---- Peers
  void relay(const Room& room, const Message& message) override {
    const auto& shared = room.shared();
    for (std::size_t t = 0; t < outbound_.size(); ++t) {
      if (t == thread_ || !shared->local[t].load(std::memory_order_relaxed)) continue;
      if (!flush_posted_) {
        // After every handler ready in this round has run: one hand-over per round.
        flush_posted_ = true;
        boost::asio::post(io_, [this] { flush(); });
      }
      outbound_[t].push_back({shared, message});
      outbound_bytes_[t] += cost(message);
    }
  }

  // Hands this round's batches over now instead of in the handler relay() posted. For a
  // server that writes at its own round end (chat-fibers), before those writes: a reply
  // written then must not overtake lines relayed before it.
  void hand_over() {
    if (flush_posted_) flush();
  }

  // Before a session reads: false while this thread has more than kCredit bytes on their
  // way to some other thread; then wait_for_credit() before trying again.
  bool may_read() {
    if (!over_credit()) return true;
    // Waiting from now on. A destination releasing bytes after this store sees it and
    // wakes us; one that released them before it is seen by the check that follows
    // (both sides seq_cst: one of them sees the other).
    waiting_.store(true);
    if (over_credit() || !waiting_.exchange(false)) return false;
    return true;  // released meanwhile, and the wake-up is ours to skip
  }

  // Completes (with operation_aborted) on this thread once a destination has released
  // credit, or at wake(); `token` as for any Asio operation (a callback, deferred, a fiber
  // yield). Then call may_read() again.
  template <class Token>
  decltype(auto) wait_for_credit(Token&& token) {
    // Made on first use: the first I/O object of an io_context must stay the server's own
    // (chat/net.hpp, first_io_object).
    if (!credit_) credit_.emplace(io_, Clock::time_point::max());
    return credit_->async_wait(std::forward<Token>(token));
  }

  // Wakes every session waiting for credit: on shutdown, to find itself stopped; and
  // when a destination has released credit (release()).
  void wake() {
    if (credit_) credit_->cancel();
  }

  // Bytes batched or on their way from this thread to `thread` and not yet delivered.
  std::size_t in_flight(std::size_t thread) const noexcept {
    return in_flight_[thread].load() + outbound_bytes_[thread];
  }

  // Delivers every batch that has arrived, before this thread handles what a client sent
  // (call it first thing when input is read): a line relayed before its sender got a
  // reply is then queued for every receiver before anything a receiver does after seeing
  // that reply, as on one thread.
  void catch_up() {
    while (!inbox_.empty()) deliver_oldest();
  }

  Counters<std::uint64_t> total() const override {
    Counters<std::uint64_t> sum;
    for (const Relay* relay : cluster_.relays_) add(sum, relay->hub_.counters());
    return sum;
  }

  // ---- RoomLinks
  void link(Room& room) override {
    std::lock_guard lock(cluster_.rooms_mutex_);
    auto it = cluster_.rooms_.find(room.name());
    if (it == cluster_.rooms_.end()) {
      it = cluster_.rooms_
               .try_emplace(room.name(), std::make_shared<SharedRoom>(room.name(), cluster_.threads()))
               .first;
    }
    it->second->local[thread_].store(&room, std::memory_order_relaxed);
    room.set_shared(it->second);
  }

  void unlink(Room& room) override {
    std::lock_guard lock(cluster_.rooms_mutex_);
    SharedRoom& shared = *room.shared();
    shared.local[thread_].store(nullptr, std::memory_order_relaxed);
    room.set_shared(nullptr);
    for (std::size_t t = 0; t < cluster_.threads(); ++t) {
      if (shared.local[t].load(std::memory_order_relaxed)) return;
    }
    // Gone from every thread. Batches on their way may still hold it; they find no
    // members, and a room joined again by this name is a new SharedRoom.
    cluster_.rooms_.erase(cluster_.rooms_.find(shared.name));  // by iterator: `shared` may go with it
  }

  std::size_t count() const override {
    std::lock_guard lock(cluster_.rooms_mutex_);
    return cluster_.rooms_.size();
  }

 private:
  struct Line {
    std::shared_ptr<SharedRoom> room;
    Message message;
  };
  using Batch = std::vector<Line>;
  struct Arrival {
    Batch lines;
    std::size_t source;
    std::size_t bytes;
  };

  static std::size_t cost(const Message& message) noexcept { return sizeof(Line) + message->size(); }

  bool over_credit() const noexcept {
    for (std::size_t t = 0; t < outbound_.size(); ++t) {
      if (in_flight(t) > kCredit) return true;
    }
    return false;
  }

  // On the destination thread, once it has delivered `bytes` from this thread.
  void release(std::size_t destination, std::size_t bytes) {
    const std::size_t left = in_flight_[destination].fetch_sub(bytes) - bytes;
    // Wake at half the credit, not just under it, so that a waiting source reads a good
    // while before it waits again.
    if (left <= kCredit / 2 && waiting_.load() && waiting_.exchange(false)) {
      boost::asio::post(io_, [this] { wake(); });
    }
  }

  // Hands each non-empty batch to its thread: one post per destination.
  void flush() {
    flush_posted_ = false;
    for (std::size_t t = 0; t < outbound_.size(); ++t) {
      if (outbound_[t].empty()) continue;
      Relay& destination = cluster_.relay(t);
      in_flight_[t].fetch_add(outbound_bytes_[t]);
      boost::asio::post(destination.io_, [&destination, arrival = Arrival{std::move(outbound_[t]), thread_,
                                                                           outbound_bytes_[t]}]() mutable {
        destination.receive(std::move(arrival));
      });
      outbound_[t].clear();  // moved from: empty, made so
      outbound_bytes_[t] = 0;
    }
  }

  // On this thread. Batches are delivered one per round, so that the writes each one
  // starts run before the next: batches that piled up while this thread was off its core
  // would otherwise all land in the outboxes before any write, and a receiver that reads
  // as fast as it can would go over --max-pending. A one-thread server alternates reading
  // and writing the same way.
  void receive(Arrival arrival) {
    inbox_.push_back(std::move(arrival));
    if (!drain_posted_) post_drain();
  }

  void post_drain() {
    drain_posted_ = true;
    boost::asio::post(io_, [this] {
      drain_posted_ = false;
      if (inbox_.empty()) return;  // caught up meanwhile
      deliver_oldest();
      if (inbox_.empty()) return;
      if (write_) write_();  // this batch's writes before the next one's deliveries
      post_drain();
    });
  }

  // Each line of the oldest batch to this thread's members of its room, as they are now.
  void deliver_oldest() {
    const Arrival& oldest = inbox_.front();
    for (const Line& line : oldest.lines) {
      const Room* room = line.room->local[thread_].load(std::memory_order_relaxed);
      if (!room) continue;  // every member here has left since
      for (Participant* member : room->members()) deliver_(static_cast<Session&>(*member), line.message);
    }
    cluster_.relay(oldest.source).release(thread_, oldest.bytes);
    inbox_.pop_front();
  }

  Cluster<Session>& cluster_;
  const std::size_t thread_;
  boost::asio::io_context& io_;
  Hub& hub_;
  Deliver deliver_;
  Write write_;
  std::vector<Batch> outbound_;               // per destination thread; ours stays empty
  std::vector<std::size_t> outbound_bytes_;   // cost() of each outbound_ batch
  std::unique_ptr<std::atomic<std::size_t>[]> in_flight_;  // per destination: posted, not delivered
  std::atomic<bool> waiting_{false};          // a session waits for credit (wait_for_credit)
  std::optional<Timer> credit_;               // never expires: cancelled to wake the waiting
  std::deque<Arrival> inbox_;                 // from the other threads, oldest first; front() is next
  bool flush_posted_ = false;
  bool drain_posted_ = false;
};

}  // namespace net
}  // namespace chat
