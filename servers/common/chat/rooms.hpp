#pragma once
// The room registry (protocol §Chat lines, /join): who is in which room.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace chat {

class Room;

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

 private:
  friend class Rooms;
  std::string name_;
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

  std::size_t count() const noexcept { return rooms_.size(); }

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
};

}  // namespace chat
