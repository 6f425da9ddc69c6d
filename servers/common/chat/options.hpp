#pragma once
// The command line every variant shares (protocol §Limits, §Life cycle).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
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
};

// Parses the shared options; add_own adds the variant's own (e.g. --stack-size). On
// --help or a bad option it prints and exits with CLI11's status.
ServerOptions parse_server_options(int argc, char** argv, std::string_view variant,
                                   const std::function<void(CLI::App&)>& add_own = {});

// --stack-size BYTES, with K/M suffixes (KiB, MiB).
void add_stack_size_option(CLI::App& app, std::size_t& bytes, const std::string& what);

// The one line a server prints when ready: "listening on ADDRESS:PORT variant=NAME".
void announce_listening(std::string_view address, std::uint16_t port, std::string_view variant);

}  // namespace chat
