// loadgen merge: one report from the reports of the slices of one chat run, as exact as a
// single process's (docs/loadgen.md, "Merging reports"; docs/distributed.md).
#pragma once

#include <boost/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace loadgen {

// Reports that cannot be merged: another mode, another loadgen build, other options,
// overlapping slices, a report without its histogram or loss detail.
struct MergeRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct SliceReport {
  std::string name;  // how errors and the merged report name it: its file
  boost::json::object report;
};

// Throws MergeRefused. The merged report's "missing_clients" lists the clients of the run
// that no report covers; then its expected, lost and outstanding are null, since what those
// clients sent is unknown.
boost::json::object merge_reports(const std::vector<SliceReport>& slices);

}  // namespace loadgen
