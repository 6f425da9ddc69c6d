#include <cerrno>
#include <system_error>
#include <utility>

#include "bench.hpp"

namespace microbench {

StackThread::StackThread(std::size_t stack_size, std::function<void()> body)
    : body_(std::make_unique<std::function<void()>>(std::move(body))) {
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  int error = stack_size ? pthread_attr_setstacksize(&attributes, stack_size) : 0;
  if (!error) {
    error = pthread_create(
        &handle_, &attributes,
        [](void* body) -> void* {
          (*static_cast<std::function<void()>*>(body))();
          return nullptr;
        },
        body_.get());
  }
  pthread_attr_destroy(&attributes);
  if (error) throw std::system_error(error, std::generic_category(), "pthread_create");
  joinable_ = true;
}

StackThread::StackThread(StackThread&& other) noexcept
    : body_(std::move(other.body_)),
      handle_(other.handle_),
      joinable_(std::exchange(other.joinable_, false)) {}

StackThread::~StackThread() { join(); }

void StackThread::join() {
  if (joinable_) pthread_join(handle_, nullptr);
  joinable_ = false;
}

}  // namespace microbench
