// The server host's memory per connection, parts and whole (server_host.hpp).
#include "server_host.hpp"

#include <cmath>
#include <cstdio>
#include <set>

namespace loadgen {

namespace {

// Least-squares slope over the steps of any reading; nullopt where fewer than two steps have it.
template <class Reading>
std::optional<double> slope_over(const std::vector<MemorySample>& steps, Reading reading) {
  std::vector<double> x, y;
  for (const auto& s : steps) {
    const std::optional<double> v = reading(s);
    if (!v) continue;
    x.push_back(static_cast<double>(s.clients));
    y.push_back(*v);
  }
  return least_squares_slope(x, y);
}

std::optional<double> as_double(const std::optional<std::uint64_t>& v) {
  return v ? std::optional<double>(static_cast<double>(*v)) : std::nullopt;
}

// The caches that make up a TCP socket's kernel side: the sock, its inode, the dentry and
// file of its descriptor, its buffers, its port binding. Everything else is "other".
bool socket_cache(const std::string& name) {
  return name == "TCP" || name == "TCPv6" || name == "sock_inode_cache" || name == "dentry" || name == "filp" ||
         name.starts_with("skbuff_") || name.starts_with("tcp_bind");
}

// The whole's resolution: the per-CPU slabs of the caches the ramp grew, at its start and
// at its end, over the connections it added (ServerHost::whole_resolution). Objects put into
// the free slots of the first took no free memory; the free slots of the second took free
// memory and hold no object: either way, up to their size.
void add_resolution(const std::vector<MemorySample>& steps, const std::vector<std::string>& grown,
                    ServerHost& host) {
  const MemorySample &first = steps.front(), &last = steps.back();
  const double added = static_cast<double>(last.clients) - static_cast<double>(first.clients);
  if (first.slab_cpu_reserve.empty() || last.slab_cpu_reserve.empty() || added <= 0) return;
  double reserve = 0;
  for (const auto& name : grown)
    for (const MemorySample* s : {&first, &last}) {
      const auto it = s->slab_cpu_reserve.find(name);
      if (it != s->slab_cpu_reserve.end()) reserve += static_cast<double>(it->second);
    }
  host.whole_resolution = reserve / added;
}

// The kernel parts: per slab cache, the slope over the steps (both ends) less the client's
// end measured apart, and their sums by kind. Also the client's end in total.
void add_slab_parts(const std::vector<MemorySample>& steps, const std::optional<ClientEnd>& client_end,
                    ServerHost& host) {
  if (!host.have_slabs) return;
  const double n = host.have_client ? static_cast<double>(client_end->connections) : 1.0;
  std::set<std::string> names;
  for (const auto& s : steps)
    for (const auto& entry : s.slab_caches) names.insert(entry.first);
  std::map<std::string, double> server_caches;
  std::vector<std::string> grown;  // the caches the ramp grew, both ends counted
  for (const auto& name : names) {
    const auto total = slope_over(steps, [&](const MemorySample& s) -> std::optional<double> {
      if (s.slab_caches.empty()) return std::nullopt;
      const auto it = s.slab_caches.find(name);
      return it == s.slab_caches.end() ? 0.0 : static_cast<double>(it->second);
    });
    double client = 0;
    if (host.have_client) {
      const auto it = client_end->dropped_bytes.find(name);
      if (it != client_end->dropped_bytes.end()) client = static_cast<double>(it->second) / n;
    }
    host.client_end += client;
    if (total) server_caches[name] = *total - client;
    if (total && *total > 0) grown.push_back(name);
  }
  add_resolution(steps, grown, host);
  for (const auto& [name, bytes] : server_caches) {
    (socket_cache(name) ? host.socket : host.other) += bytes;
    if (slab_cache_reclaimable(name)) host.reclaimable += bytes;
    (socket_cache(name) ? host.socket_caches : host.other_caches)[name] = bytes;
  }
}

// The whole, of the same scope as the parts: the machine's figures less the client's end
// in the kernel and loadgen's own growth (its RSS and page tables).
void add_whole(const std::vector<MemorySample>& steps, ServerHost& host) {
  host.loadgen = slope_over(steps, [](const MemorySample& s) -> std::optional<double> {
    if (!s.loadgen_rss_bytes) return std::nullopt;
    return static_cast<double>(*s.loadgen_rss_bytes + s.loadgen_pte_bytes.value_or(0));
  });
  const double client_side = host.client_end + host.loadgen.value_or(0);
  // Free memory: MemFree plus the free pages parked in the per-CPU lists (MemFree leaves
  // them out, and they swing by tens of MB within seconds of a ramp or a teardown), less
  // the page cache's changes: file pages the kernel drops or reads in for reasons of its
  // own (writeback, another process, proactive reclaim), none of them a connection's.
  const auto free_drop = slope_over(steps, [](const MemorySample& s) -> std::optional<double> {
    if (!s.mem_free_bytes || !s.per_cpu_free_bytes || !s.page_cache_bytes) return std::nullopt;
    return static_cast<double>(*s.mem_free_bytes + *s.per_cpu_free_bytes + *s.page_cache_bytes);
  });
  host.per_cpu_free = slope_over(steps, [](const MemorySample& s) { return as_double(s.per_cpu_free_bytes); });
  host.page_cache = slope_over(steps, [](const MemorySample& s) { return as_double(s.page_cache_bytes); });
  const auto meminfo_sum = slope_over(steps, [](const MemorySample& s) -> std::optional<double> {
    if (!s.anon_pages_bytes || !s.slab_bytes || !s.kernel_stack_bytes || !s.page_tables_bytes) return std::nullopt;
    return static_cast<double>(*s.anon_pages_bytes + *s.slab_bytes + *s.kernel_stack_bytes + *s.page_tables_bytes);
  });
  const auto available_drop = slope_over(steps, [](const MemorySample& s) { return as_double(s.mem_available_bytes); });
  // Objects put into slots of slabs allocated before the ramp (what earlier work freed) took
  // no page from the free pool: neither MemFree nor Slab moves by them. Small against tens of
  // MB at thousands of connections, most of the whole at a few hundred.
  const auto slack = slope_over(steps, [](const MemorySample& s) { return as_double(s.slab_slack_bytes); });
  if (slack) host.slab_slack_used = -*slack;
  const double slack_used = host.slab_slack_used.value_or(0);
  if (free_drop) host.whole = -*free_drop + slack_used - client_side;
  if (meminfo_sum) host.whole_meminfo = *meminfo_sum + slack_used - client_side;
  if (available_drop) host.mem_available = -*available_drop - client_side;
}

std::vector<std::string> flags_of(const ServerHost& host) {
  std::vector<std::string> flags;
  if (!host.have_slabs) flags.push_back("/proc/slabinfo unreadable (not root): no kernel parts");
  if (!host.have_client) flags.push_back("client end not measured (needs --server-pid and /proc/slabinfo)");
  if (!host.kernel_stack) flags.push_back("kernel stack size unknown");
  if (host.whole && host.rss && *host.whole < *host.rss)
    flags.push_back("the whole is smaller than the server's own RSS");
  if (host.disagreement && *host.disagreement > 0.2 && !host.within_resolution) {
    char text[96];
    std::snprintf(text, sizeof text, "parts and whole disagree by %.0f%% (more than 20%%)", *host.disagreement * 100);
    flags.push_back(text);
  }
  return flags;
}

}  // namespace

ServerHost server_host(const std::vector<MemorySample>& steps, const std::optional<ClientEnd>& client_end,
                       std::optional<std::uint64_t> stack_per_task) {
  ServerHost host;
  host.have_slabs = !steps.empty() && !steps.front().slab_caches.empty() && !steps.back().slab_caches.empty();
  host.have_client = client_end && client_end->connections > 0;
  host.rss = slope_over(steps, [](const MemorySample& s) { return as_double(s.rss_bytes); });
  host.pte = slope_over(steps, [](const MemorySample& s) { return as_double(s.pte_bytes); });
  host.threads = slope_over(steps, [](const MemorySample& s) { return as_double(s.threads); });
  host.stack_per_thread = stack_per_task;
  if (host.threads && stack_per_task) host.kernel_stack = *host.threads * static_cast<double>(*stack_per_task);
  add_slab_parts(steps, client_end, host);
  add_whole(steps, host);
  if (host.rss && host.have_slabs)
    host.parts = *host.rss + host.pte.value_or(0) + host.kernel_stack.value_or(0) + host.socket + host.other;
  if (host.parts && host.whole && *host.whole > 0)
    host.disagreement = std::abs(*host.parts - *host.whole) / *host.whole;
  if (host.parts && host.whole && host.whole_resolution)
    host.within_resolution = std::abs(*host.parts - *host.whole) <= *host.whole_resolution;
  host.flags = flags_of(host);
  return host;
}

}  // namespace loadgen
