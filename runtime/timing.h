// What `sluice bench` says about its own timings.
#pragma once

#include <string>
#include <vector>

namespace sluice::runtime {

// A note for the user when a series of run times (ms) is too uneven to mean much: the median
// more than 1.5x the fastest run, which on a shared machine means that something else held
// the cores for most of the runs (a median of 155 ms against a fastest run of 3.3 ms was seen
// while another process ran tests). Empty when the series looks usable, or has fewer than 5 runs.
// `what` names the series (the model, or which side of a paired timing).
std::string uneven_timing_note(const std::vector<double>& ms, const std::string& what, int threads, int cores);

}  // namespace sluice::runtime
