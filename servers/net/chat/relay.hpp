#pragma once
// A server on several threads (--threads N): one io_context per thread, each with its own
// sessions, Hub and rooms; this ties the threads' rooms together (docs/servers.md,
// "Several threads").
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

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
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

// What every thread shares: the room names, each thread's Relay, and the connections
// accepted but not yet admitted by their thread (--max-clients counts them).
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

// One thread's link to the others. Constructed on any thread before the threads run;
// afterwards used only on its own thread, except receive(), which it posts to others.
template <class Session>
class Relay final : public Peers, public RoomLinks {
 public:
  using Hub = chat::Hub<Session, OwnedCount>;
  // deliver(receiver, message): queue a relayed chat line, as for a local one.
  using Deliver = std::function<void(Session&, const Message&)>;

  Relay(Cluster<Session>& cluster, std::size_t thread, boost::asio::io_context& io, Hub& hub,
        Deliver deliver)
      : cluster_(cluster),
        thread_(thread),
        io_(io),
        hub_(hub),
        deliver_(std::move(deliver)),
        outbound_(cluster.threads()) {
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
    }
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

  // Hands each non-empty batch to its thread: one post per destination.
  void flush() {
    flush_posted_ = false;
    for (std::size_t t = 0; t < outbound_.size(); ++t) {
      if (outbound_[t].empty()) continue;
      Relay& destination = cluster_.relay(t);
      boost::asio::post(destination.io_, [&destination, batch = std::move(outbound_[t])]() mutable {
        destination.receive(std::move(batch));
      });
      outbound_[t].clear();  // moved from: empty, made so
    }
  }

  // On this thread. Batches are delivered one per round, so that the writes each one
  // starts run before the next: batches that piled up while this thread was off its core
  // would otherwise all land in the outboxes before any write, and a receiver that reads
  // as fast as it can would go over --max-pending. A one-thread server alternates reading
  // and writing the same way.
  void receive(Batch batch) {
    inbox_.push_back(std::move(batch));
    if (!drain_posted_) post_drain();
  }

  void post_drain() {
    drain_posted_ = true;
    boost::asio::post(io_, [this] {
      drain_posted_ = false;
      if (inbox_.empty()) return;  // caught up meanwhile
      deliver_oldest();
      if (!inbox_.empty()) post_drain();
    });
  }

  // Each line of the oldest batch to this thread's members of its room, as they are now.
  void deliver_oldest() {
    for (const Line& line : inbox_.front()) {
      const Room* room = line.room->local[thread_].load(std::memory_order_relaxed);
      if (!room) continue;  // every member here has left since
      for (Participant* member : room->members()) deliver_(static_cast<Session&>(*member), line.message);
    }
    inbox_.pop_front();
  }

  Cluster<Session>& cluster_;
  const std::size_t thread_;
  boost::asio::io_context& io_;
  Hub& hub_;
  Deliver deliver_;
  std::vector<Batch> outbound_;  // per destination thread; ours stays empty
  std::deque<Batch> inbox_;      // from the other threads, oldest first; front() is next
  bool flush_posted_ = false;
  bool drain_posted_ = false;
};

}  // namespace net
}  // namespace chat
