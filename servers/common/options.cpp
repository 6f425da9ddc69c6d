#include "chat/options.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace chat {

ServerOptions parse_server_options(int argc, char** argv, std::string_view variant,
                                   const std::function<void(CLI::App&)>& add_own) {
  ServerOptions options;
  std::int64_t write_timeout_ms = options.write_timeout.count();
  std::int64_t linger_ms = options.linger.count();
  CLI::App app{"chatbench chat server, variant " + std::string(variant) +
               ": a line-based chat relay (docs/protocol.md)"};
  app.add_option("--bind", options.bind, "Address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "TCP port; 0 picks a free one")->capture_default_str();
  app.add_option("--max-line", options.max_line, "Content bytes per line; longer closes the client")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-pending", options.max_pending,
                 "Bytes queued for one receiver; more disconnects it as slow")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--write-timeout-ms", write_timeout_ms,
                 "A receiver that takes no byte for this long while output is pending is "
                 "disconnected")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-clients", options.max_clients, "Most clients at once; 0 = no limit")
      ->capture_default_str();
  app.add_option("--linger-ms", linger_ms, "After a closing client's last reply, its input is "
                 "read and discarded for at most this long (docs/reliability.md)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--linger-bytes", options.linger_bytes, "Most bytes read and discarded while lingering")
      ->capture_default_str();
  if (add_own) add_own(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  options.write_timeout = std::chrono::milliseconds(write_timeout_ms);
  options.linger = std::chrono::milliseconds(linger_ms);
  return options;
}

void add_stack_size_option(CLI::App& app, std::size_t& bytes, const std::string& what) {
  app.add_option("--stack-size", bytes, "Stack per connection in bytes (K, M suffixes); " + what)
      ->transform(CLI::AsSizeValue(false));
}

void announce_listening(std::string_view address, std::uint16_t port, std::string_view variant) {
  std::cout << "listening on " << address << ':' << port << " variant=" << variant << std::endl;
}

}  // namespace chat
