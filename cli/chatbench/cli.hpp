#pragma once
// The command-line conventions every chatbench executable shares (docs/exit-status.md).
// --help ends with where to read on. A bad command line costs nothing: before anything
// starts, the program prints one line naming the option and what it accepts, and exits
// with status 2.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string_view>

namespace chatbench::cli {

// Exit statuses every executable shares; each adds its own above these.
inline constexpr int exit_failure = 1;  // could not do its job, e.g. cannot listen
inline constexpr int exit_usage = 2;    // bad command line; nothing was started

// Checks of an option's value. Each reads the text before CLI11 converts it, so that
// every bad value is reported in the same words: what was given, what is accepted. Use
// with option->check(); byte_size() rewrites its value, so with option->transform().

// A decimal integer from min to max.
CLI::Validator integer(std::int64_t min, std::int64_t max);
// A finite number above `low` (or at least `low`, if low_inclusive) and at most max.
CLI::Validator number(double low, bool low_inclusive, double max);
// Bytes, plain or with a binary suffix K, M or G (16K = 16384), from min to max.
CLI::Validator byte_size(std::uint64_t min, std::uint64_t max);
// A numeric IPv4 address, or IPv4 or IPv6 if ipv6.
CLI::Validator ip_address(bool ipv6);

// "16K" for 16384, "1M", else plain bytes: how sizes are written back to a user.
std::string show_size(std::uint64_t bytes);

// Parses the command line, returning only if it is good. --help prints the help, ending
// with `more` (e.g. "docs/loadgen.md"), and exits 0. Anything wrong prints
// "PROGRAM: WHAT (PROGRAM --help)" on stderr and exits with exit_usage. PROGRAM is the
// app's name: give it one (CLI::App{description, "loadgen"}).
void parse(CLI::App& app, int argc, char** argv, std::string_view more);

}  // namespace chatbench::cli
