#pragma once
// What a chat server does with a line, whatever its concurrency model: the rooms, the
// commands and the counters, in one place. A variant feeds it decoded lines and supplies
// `deliver`, the one step that depends on the model (queue a message for a receiver).

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "chat/command.hpp"
#include "chat/counters.hpp"
#include "chat/message.hpp"
#include "chat/rooms.hpp"

namespace chat {

// How a Hub that is one of several (one per thread of a multi-threaded server) reaches
// the others (chat/relay.hpp). A one-thread server has none.
class Peers {
 public:
  // A chat line for the members of `room` on the other threads.
  virtual void relay(const Room& room, const Message& message) = 0;
  // Every thread's counters added up, for /stats.
  virtual Counters<std::uint64_t> total() const = 0;

 protected:
  ~Peers() = default;
};

// Session: the variant's connection type, derived from Participant.
// Count: see Counters. Not thread safe: a variant that shares it between threads guards
// it (the counters may be atomic so that they can also be bumped outside that guard).
template <class Session, class Count = std::uint64_t>
class Hub {
  static_assert(std::is_base_of_v<Participant, Session>);

 public:
  explicit Hub(std::string_view variant) : variant_(variant) {}

  // What the sender gets back: a reply to queue for it (or none), and whether it quit.
  struct Outcome {
    Message reply;
    bool quit = false;
  };

  // A new connection enters the lobby.
  void enter(Session& session) {
    rooms_.join(session, Rooms::lobby);
    ++counters_.clients;
  }
  // A connection is gone: it receives nothing more.
  void exit(Session& session) {
    if (!session.room()) return;
    rooms_.leave(session);
    --counters_.clients;
  }

  // Handles one line (content, no LF) from `sender`. For a chat line it calls
  // deliver(Session& receiver, const Message&) once per other member of the sender's
  // room, all with the same message.
  template <class Deliver>
  Outcome handle(Session& sender, std::string_view line, Deliver&& deliver) {
    const Command command = parse_command(line);
    switch (command.kind) {
      case CommandKind::chat: {
        ++counters_.lines_in;
        const Message message = make_message(line);
        for (Participant* member : sender.room()->members()) {
          if (member != &sender) deliver(static_cast<Session&>(*member), message);
        }
        if (peers_) peers_->relay(*sender.room(), message);
        return {};
      }
      case CommandKind::join:
        if (!is_valid_room_name(command.argument)) return {replies::bad_room()};
        rooms_.join(sender, command.argument);
        return {make_message(std::string("/joined ").append(command.argument))};
      case CommandKind::stats:
        return {make_message(stats())};
      case CommandKind::quit:
        return {nullptr, true};
      case CommandKind::unknown:
        break;
    }
    return {replies::unknown_command()};
  }

  // Calls f(Session&) for every connection in a room, i.e. every one entered and not exited.
  template <class F>
  void for_each_session(F&& f) const {
    rooms_.for_each_member([&](Participant& p) { f(static_cast<Session&>(p)); });
  }

  // One of several, one per thread: rooms span them and /stats adds them up.
  void attach(Peers& peers, RoomLinks& links) noexcept {
    peers_ = &peers;
    rooms_.attach(links);
  }

  Counters<Count>& counters() noexcept { return counters_; }
  const Counters<Count>& counters() const noexcept { return counters_; }
  // A setting /stats reports after the counters, e.g. stack_size, so that a report can
  // show what was measured.
  void add_setting(std::string_view key, std::uint64_t value) {
    settings_.append(" ").append(key).append("=").append(std::to_string(value));
  }
  std::string stats() const {
    if (peers_) return stats_line(variant_, peers_->total(), rooms_.count()) + settings_;
    return stats_line(variant_, counters_, rooms_.count()) + settings_;
  }
  std::string_view variant() const noexcept { return variant_; }

 private:
  std::string variant_;
  Rooms rooms_;
  Counters<Count> counters_;
  std::string settings_;  // " key=value" for each add_setting()
  Peers* peers_ = nullptr;
};

}  // namespace chat
