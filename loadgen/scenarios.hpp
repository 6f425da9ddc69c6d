// The three modes (docs/loadgen.md, "What each mode does"), each a sequence of phases
// driven from the main thread: idle.cpp, broadcast.cpp and chat.cpp, on what they share
// in scenario_common.hpp.
#pragma once

#include <boost/json.hpp>

#include "engine.hpp"
#include "report.hpp"

namespace loadgen {

void run_idle(Engine& engine, boost::json::object& report, Progress& progress);
void run_broadcast(Engine& engine, boost::json::object& report, Progress& progress);
void run_chat(Engine& engine, boost::json::object& report, Progress& progress);

}  // namespace loadgen
