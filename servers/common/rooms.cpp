#include "chat/rooms.hpp"

namespace chat {

void Rooms::join(Participant& who, std::string_view name) {
  if (who.room_ && who.room_->name_ == name) return;
  leave(who);
  auto it = rooms_.find(name);
  if (it == rooms_.end()) {
    it = rooms_.try_emplace(std::string(name), name).first;
    if (links_) links_->link(it->second);
  }
  it->second.members_.insert(&who);
  who.room_ = &it->second;
}

void Rooms::leave(Participant& who) {
  Room* room = who.room_;
  if (!room) return;
  who.room_ = nullptr;
  room->members_.erase(&who);
  if (room->members_.empty()) {
    if (links_) links_->unlink(*room);
    rooms_.erase(room->name_);
  }
}

}  // namespace chat
