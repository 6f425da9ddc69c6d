#include "chat/options.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chatbench/cli.hpp>
#include <cstring>
#include <iostream>

namespace chat {

namespace cli = chatbench::cli;

ServerOptions parse_server_options(int argc, char** argv, std::string_view variant,
                                   const std::function<void(CLI::App&)>& add_own) {
  ServerOptions options;
  std::int64_t write_timeout_ms = options.write_timeout.count();
  std::int64_t linger_ms = options.linger.count();
  // Ceilings far above any use, low enough that no arithmetic on them overflows.
  constexpr std::int64_t most_bytes = std::int64_t{1} << 30;  // per line, per receiver
  constexpr std::int64_t most_ms = 3'600'000;                   // an hour
  constexpr std::int64_t most_clients = 10'000'000;
  CLI::App app{"chatbench chat server, variant " + std::string(variant) +
                   ": a line-based chat relay (docs/protocol.md)",
               "chat-" + std::string(variant)};
  app.add_option("--bind", options.bind, "Address to listen on")
      ->capture_default_str()
      ->check(cli::ip_address(true));
  app.add_option("--port", options.port, "TCP port; 0 picks a free one")
      ->capture_default_str()
      ->check(cli::integer(0, 65535));
  app.add_option("--max-line", options.max_line, "Content bytes per line; longer closes the client")
      ->capture_default_str()
      ->check(cli::integer(1, most_bytes));
  app.add_option("--max-pending", options.max_pending,
                 "Bytes queued for one receiver; more disconnects it as slow")
      ->capture_default_str()
      ->check(cli::integer(1, most_bytes));
  app.add_option("--write-timeout-ms", write_timeout_ms,
                 "A receiver that takes no byte for this long while output is pending is "
                 "disconnected")
      ->capture_default_str()
      ->check(cli::integer(1, most_ms));
  app.add_option("--max-clients", options.max_clients, "Most clients at once; 0 = no limit")
      ->capture_default_str()
      ->check(cli::integer(0, most_clients));
  app.add_option("--linger-ms", linger_ms, "After a closing client's last reply, its input is "
                 "read and discarded for at most this long (docs/reliability.md)")
      ->capture_default_str()
      ->check(cli::integer(0, most_ms));
  app.add_option("--linger-bytes", options.linger_bytes, "Most bytes read and discarded while lingering")
      ->capture_default_str()
      ->check(cli::integer(0, most_bytes));
  if (add_own) add_own(app);
  cli::parse(app, argc, argv, "docs/servers.md and docs/protocol.md");
  options.write_timeout = std::chrono::milliseconds(write_timeout_ms);
  options.linger = std::chrono::milliseconds(linger_ms);
  return options;
}

void add_stack_size_option(CLI::App& app, std::size_t& bytes, std::size_t minimum,
                           const std::string& what) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const CLI::Validator size = cli::byte_size(minimum, std::size_t{1} << 30);
  const CLI::Validator in_whole_pages(
      [&app, page, size](std::string& text) {
        if (std::string error = size(text); !error.empty()) return error;  // now plain bytes
        const std::size_t asked = std::stoull(text);
        const std::size_t rounded = (asked + page - 1) / page * page;
        if (rounded != asked) {
          std::cerr << app.get_name() << ": --stack-size " << asked << " rounded up to " << rounded
                    << ", whole pages" << std::endl;
          text = std::to_string(rounded);
        }
        return std::string();
      },
      size.get_description());
  app.add_option("--stack-size", bytes,
                 "Stack per connection in bytes (K, M, G suffixes), whole pages; " + what)
      ->transform(in_whole_pages);
}

void add_threads_option(CLI::App& app, std::size_t& threads) {
  app.add_option("--threads", threads,
                 "Event loops, one thread each; connections are spread over them round-robin "
                 "and rooms span them (docs/servers.md)")
      ->capture_default_str()
      ->check(cli::integer(1, 256));
}

void announce_listening(std::string_view address, std::uint16_t port, std::string_view variant) {
  std::cout << "listening on " << address << ':' << port << " variant=" << variant << std::endl;
}

ListenError::ListenError(const ServerOptions& options, const std::string& reason)
    : std::runtime_error("cannot listen on " + options.bind + ":" + std::to_string(options.port) + ": " +
                         reason) {}

namespace {
std::string io_uring_unavailable(int error) {
  const std::string reason = std::string("(io_uring_setup: ") + std::strerror(error) + ")";
  switch (error) {
    case ENOSYS:
      return "io_uring is unavailable: the kernel is built without it, or a seccomp filter blocks it " + reason;
    case EPERM:
      return "io_uring is unavailable: disabled by sysctl kernel.io_uring_disabled, or a seccomp filter blocks it " +
             reason;
    default:
      return "io_uring is unavailable " + reason;
  }
}
}  // namespace

IoUringUnavailable::IoUringUnavailable(int error) : std::runtime_error(io_uring_unavailable(error)) {}

}  // namespace chat
