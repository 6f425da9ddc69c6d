#pragma once
// The command line every variant shares (protocol §Limits, §Life cycle), and how a
// server says it cannot start (docs/exit-status.md).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace CLI {
class App;
}

namespace chat {

struct ServerOptions {
  std::string bind = "127.0.0.1";
  std::uint16_t port = 3000;
  std::size_t max_line = 4096;
  std::size_t max_pending = 1048576;
  std::chrono::milliseconds write_timeout{5000};
  std::size_t max_clients = 0;  // 0: as many as the process can hold
  std::chrono::milliseconds linger{1000};  // lingering close (chat/linger.hpp)
  std::size_t linger_bytes = 4194304;
  std::size_t threads = 1;  // --threads, for the variants that take it
};

// Parses the shared options; add_own adds the variant's own (e.g. --stack-size). --help
// prints the help and exits 0; a bad command line prints one line and exits 2
// (chatbench/cli.hpp).
ServerOptions parse_server_options(int argc, char** argv, std::string_view variant,
                                   const std::function<void(CLI::App&)>& add_own = {});

// --stack-size BYTES (K, M, G suffixes: KiB, MiB, GiB): below `minimum` is a usage
// error; a size that is not whole pages is rounded up to them, and stderr says so.
void add_stack_size_option(CLI::App& app, std::size_t& bytes, std::size_t minimum,
                           const std::string& what);

// --threads N (1 to 256), for a variant that runs one event loop per thread (asio, coro,
// fibers). A variant that does not add it refuses it as a usage error.
void add_threads_option(CLI::App& app, std::size_t& threads);

// The one line a server prints when ready: "listening on ADDRESS:PORT variant=NAME".
void announce_listening(std::string_view address, std::uint16_t port, std::string_view variant);

// A server that cannot listen (address in use, permission denied, no such address) throws
// this; main() prints "chat-VARIANT: " and what(), "cannot listen on ADDRESS:PORT:
// REASON", and exits 1.
class ListenError : public std::runtime_error {
 public:
  ListenError(const ServerOptions& options, const std::string& reason);
};

// The io_uring builds (chat-uring, chat-asio-uring, chat-coro-uring) throw this when the
// kernel will not give them a ring (`error`: the errno of io_uring_setup); main() prints
// "chat-VARIANT: " and what(), "io_uring is unavailable: WHY (REASON)", and exits 1.
// WHY names what refuses it: ENOSYS a kernel without io_uring or a seccomp filter
// (container runtimes' default profiles), EPERM the sysctl kernel.io_uring_disabled or a
// seccomp filter. Said plainly, since the bare errno reads like a bug of the server's.
class IoUringUnavailable : public std::runtime_error {
 public:
  explicit IoUringUnavailable(int error);
};

}  // namespace chat
