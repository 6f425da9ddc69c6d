#pragma once
// The room registry (protocol §Chat lines, /join): who is in which room.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace chat {

class Room;
struct SharedRoom;  // a room across threads (chat/relay.hpp); opaque here

// How a Rooms that is one of several (one per thread of a multi-threaded server) ties
// each of its rooms to the same room on the other threads. A one-thread server has none.
class RoomLinks {
 public:
  virtual void link(Room& room) = 0;    // `room` has just been created here
  virtual void unlink(Room& room) = 0;  // `room` is empty and about to go
  virtual std::size_t count() const = 0;  // rooms with members on any thread

 protected:
  ~RoomLinks() = default;
};

// Base of every variant's session: the registry keeps the session's room here, so
// finding the room of a sender costs nothing.
class Participant {
 public:
  const Room* room() const noexcept { return room_; }

 protected:
  Participant() = default;
  ~Participant() = default;
  Participant(const Participant&) = delete;
  Participant& operator=(const Participant&) = delete;

 private:
  friend class Rooms;
  Room* room_ = nullptr;
};

class Room {
 public:
  explicit Room(std::string_view name) : name_(name) {}
  const std::string& name() const noexcept { return name_; }
  const std::unordered_set<Participant*>& members() const noexcept { return members_; }
  // The same room on every thread; null in a one-thread server.
  const std::shared_ptr<SharedRoom>& shared() const noexcept { return shared_; }
  void set_shared(std::shared_ptr<SharedRoom> shared) noexcept { shared_ = std::move(shared); }

 private:
  friend class Rooms;
  std::string name_;
  std::shared_ptr<SharedRoom> shared_;
  std::unordered_set<Participant*> members_;
};

// Rooms exist while they have members: a client that joins a million names leaves no
// trace. Not thread safe: a variant that shares it between threads guards it.
class Rooms {
 public:
  static constexpr std::string_view lobby = "lobby";

  // Moves `who` out of its current room (if any) into `name`, which the caller has
  // checked with is_valid_room_name().
  void join(Participant& who, std::string_view name);
  // Takes `who` out of its room; no-op if it is in none.
  void leave(Participant& who);

  // One of several (one per thread): `links` sees every room made and dropped here.
  void attach(RoomLinks& links) noexcept { links_ = &links; }

  std::size_t count() const { return links_ ? links_->count() : rooms_.size(); }

  // Calls f(Participant&) for every member of every room (e.g. to close them all).
  template <class F>
  void for_each_member(F&& f) const {
    for (const auto& [name, room] : rooms_) {
      for (Participant* member : room.members_) f(*member);
    }
  }

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  // Node-based: a Room's address never changes while it exists.
  std::unordered_map<std::string, Room, Hash, std::equal_to<>> rooms_;
  RoomLinks* links_ = nullptr;
};

}  // namespace chat
