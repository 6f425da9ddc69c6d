// The server host's memory per connection, accounted as named parts and checked against
// the whole of the same scope (docs/methodology.md, "Memory per connection"): idle mode's
// memory.server_host, written by server_host_json() (report.hpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "metrics.hpp"

namespace loadgen {

// Bytes (or threads) per connection: least-squares slopes over the idle steps, less the
// client's side where the machine's figures include it. nullopt where a reading is missing.
struct ServerHost {
  // The parts: the server process, its kernel stacks, and the slab caches.
  std::optional<double> rss, pte, threads, kernel_stack;
  std::optional<std::uint64_t> stack_per_thread;  // the kernel's stack size (THREAD_SIZE)
  bool have_slabs = false;                        // /proc/slabinfo was read: the next four are known
  double socket = 0, other = 0, reclaimable = 0;
  // Each cache's slope less the client's end of it, by name; socket: the caches of a TCP
  // socket's kernel side, other: every other cache.
  std::map<std::string, double> socket_caches, other_caches;
  std::optional<double> parts;  // rss + pte + kernel_stack + socket + other

  // The whole, of the same scope: the machine's figures less the client's side.
  std::optional<double> whole;                     // from the drop of free memory (MemFree + per-CPU free + page cache)
  std::optional<double> whole_meminfo;             // from AnonPages + Slab + KernelStack + PageTables
  std::optional<double> mem_available;             // from the drop of MemAvailable: beside, not a result
  std::optional<double> page_cache, per_cpu_free;  // the corrections within `whole`, shown
  // Empty slab slots the connections filled (the slope of the slack, negated): their objects
  // took no new page, so free memory did not drop by them. Added back to both wholes.
  std::optional<double> slab_slack_used;
  bool have_client = false;       // the client's end was measured: client_end is known
  double client_end = 0;          // the client's end in the kernel
  std::optional<double> loadgen;  // loadgen's own growth (its RSS and page tables)

  // How far the whole can tell: the per-CPU slabs of the caches the ramp grew, at its start
  // and end, over the connections it added. /proc/slabinfo counts their free slots as in
  // use, so objects can fill them unseen (or free memory go to slots no object holds); parts
  // and whole closer than this are not a disagreement (at a few hundred connections it is
  // kilobytes per connection; at thousands, a few per cent). nullopt where unknown.
  std::optional<double> whole_resolution;
  bool within_resolution = false;      // |parts - whole| <= whole_resolution: not judged, not flagged
  std::optional<double> disagreement;  // |parts - whole| / whole
  std::vector<std::string> flags;      // why the point is not a result; empty when it adds up
};

// From the idle steps (a baseline and one sample per step), the client's end measured apart
// (idle.cpp), and the kernel's stack per task (kernel_stack_per_task()).
ServerHost server_host(const std::vector<MemorySample>& steps, const std::optional<ClientEnd>& client_end,
                       std::optional<std::uint64_t> stack_per_task);

}  // namespace loadgen
