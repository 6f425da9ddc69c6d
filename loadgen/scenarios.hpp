// The three modes of SPEC §3, each a sequence of phases driven from the main thread:
// idle.cpp, broadcast.cpp and chat.cpp, on what they share in scenario_common.hpp.
#pragma once

#include <boost/json.hpp>
#include <optional>
#include <string_view>

#include "engine.hpp"
#include "report.hpp"

namespace loadgen {

void run_idle(Engine& engine, boost::json::object& report, Progress& progress);
void run_broadcast(Engine& engine, boost::json::object& report, Progress& progress);
void run_chat(Engine& engine, boost::json::object& report, Progress& progress);

// A chat line: "SENDER SEQ INTENDED_NS " padded with 'x' to `size` bytes including LF.
// INTENDED_NS is on the sending process's steady clock, or, followed by "r ", on the run's
// reference clock (a slice with a measured clock offset; docs/distributed.md, "Clocks").
void format_chat_line(std::string& out, std::uint32_t sender, std::uint64_t seq, std::int64_t intended_ns,
                      unsigned size, bool reference_clock = false);
struct ChatLine {
  std::uint32_t sender;
  std::uint64_t seq;
  std::int64_t intended_ns;
  bool reference_clock;
};
std::optional<ChatLine> parse_chat_line(std::string_view line);

}  // namespace loadgen
