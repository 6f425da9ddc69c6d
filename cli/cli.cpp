#include "chatbench/cli.hpp"

#include <arpa/inet.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace chatbench::cli {
namespace {

std::string in_quotes(const std::string& text) { return "'" + text + "'"; }

// Shortest decimal that reads back as `value`, never in exponent form ("1000000").
std::string show_number(double value) {
  char digits[400];
  const auto end = std::to_chars(digits, digits + sizeof digits, value, std::chars_format::fixed).ptr;
  return std::string(digits, end);
}

template <class T>
bool parse_whole(const std::string& text, T& value) {
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  return error == std::errc{} && stop == end;
}

// CLI11's message for an option given without its value names the option first.
std::string named_option(const CLI::Error& error) {
  const std::string what = error.what();
  return what.substr(0, what.find(':'));
}

const CLI::Option* find_option(const CLI::App& app, const std::string& name) {
  if (const CLI::Option* option = app.get_option_no_throw(name)) return option;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (const CLI::Option* option = sub->get_option_no_throw(name)) return option;
  }
  return nullptr;
}

// The one line that says what is wrong, in the words of the option's check if it has one.
std::string describe(const CLI::App& app, const CLI::ParseError& error) {
  std::string what = error.what();
  if (dynamic_cast<const CLI::ExtrasError*>(&error) != nullptr) {
    // CLI11 reads the command line from its end: put what it lists back in order.
    std::istringstream listed(what.substr(what.find(": ") + 2));
    std::vector<std::string> words{std::istream_iterator<std::string>(listed), {}};
    what = "unknown option or argument:";
    for (auto word = words.rbegin(); word != words.rend(); ++word) what += " " + *word;
  } else if (dynamic_cast<const CLI::ArgumentMismatch*>(&error) != nullptr) {
    const std::string name = named_option(error);
    const CLI::Option* option = find_option(app, name);
    what = name + ": needs a value" + (option ? ", " + option->get_type_name() : std::string());
  } else if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr &&
             app.get_require_subcommand_min() > 0 && app.get_subcommands().empty()) {
    std::string names;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    const auto rest = app.remaining();
    what = (rest.empty() ? std::string("needs") : in_quotes(rest.front()) + " is not") + " one of: " + names;
  }
  for (char& c : what) {
    if (c == '\n') c = ' ';
  }
  return what;
}

}  // namespace

CLI::Validator integer(std::int64_t min, std::int64_t max) {
  const std::string accepted = std::to_string(min) + " to " + std::to_string(max);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        std::int64_t value = 0;
        if (parse_whole(text, value) && value >= min && value <= max) return {};
        return in_quotes(text) + " is not an integer from " + accepted;
      },
      std::to_string(min) + ".." + std::to_string(max));
}

CLI::Validator number(double low, bool low_inclusive, double max) {
  const std::string accepted = (low_inclusive ? "at least " : "above ") + show_number(low) +
                               ", at most " + show_number(max);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0;
        if (parse_whole(text, value) && std::isfinite(value) && (low_inclusive ? value >= low : value > low) &&
            value <= max) {
          return {};
        }
        return in_quotes(text) + " is not a number " + accepted;
      },
      accepted);
}

std::string show_size(std::uint64_t bytes) {
  constexpr std::array<std::pair<std::uint64_t, const char*>, 3> units{{{1ULL << 30, "G"}, {1ULL << 20, "M"}, {1ULL << 10, "K"}}};
  for (const auto& [unit, suffix] : units) {
    if (bytes != 0 && bytes % unit == 0) return std::to_string(bytes / unit) + suffix;
  }
  return std::to_string(bytes);
}

CLI::Validator byte_size(std::uint64_t min, std::uint64_t max) {
  const std::string accepted = show_size(min) + " to " + show_size(max) + " (bytes, or with a K, M or G suffix)";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        // Digits, then K, M or G, optionally followed by "B" or "iB": binary units all.
        const std::size_t digits = text.find_first_not_of("0123456789");
        std::uint64_t value = 0;
        std::uint64_t unit = 1;
        const std::string suffix = digits == std::string::npos ? "" : text.substr(digits);
        if (!suffix.empty()) {
          const std::string rest = suffix.substr(1);
          const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0])));
          unit = u == 'K' ? 1ULL << 10 : u == 'M' ? 1ULL << 20 : u == 'G' ? 1ULL << 30 : 0;
          if (rest != "" && rest != "B" && rest != "iB") unit = 0;
        }
        const bool read = digits != 0 && unit != 0 && parse_whole(text.substr(0, digits), value) &&
                          value <= max / unit;
        if (!read || value * unit > max) return in_quotes(text) + " is not a size from " + accepted;
        if (value * unit < min) return in_quotes(text) + " is below the minimum of " + show_size(min) + ": accepts " + accepted;
        text = std::to_string(value * unit);
        return {};
      },
      show_size(min) + ".." + show_size(max));
}

CLI::Validator ip_address(bool ipv6) {
  const std::string accepted = ipv6 ? "an IPv4 or IPv6 address (e.g. 127.0.0.1 or ::1)" : "an IPv4 address (e.g. 127.0.0.1)";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        unsigned char address[16];
        if (inet_pton(AF_INET, text.c_str(), address) == 1) return {};
        if (ipv6 && inet_pton(AF_INET6, text.c_str(), address) == 1) return {};
        return in_quotes(text) + " is not " + accepted;
      },
      ipv6 ? "IPv4 or IPv6" : "IPv4");
}

void parse(CLI::App& app, int argc, char** argv, std::string_view more) {
  const std::string footer = "More in " + std::string(more) + "; exit statuses in docs/exit-status.md.";
  app.footer(footer);
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) sub->footer(footer);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) std::exit(app.exit(error));  // --help
    std::string command = app.get_name();
    for (const CLI::App* sub : app.get_subcommands()) command += " " + sub->get_name();
    std::cerr << app.get_name() << ": " << describe(app, error) << " (" << command << " --help)" << std::endl;
    std::exit(exit_usage);
  }
}

}  // namespace chatbench::cli
