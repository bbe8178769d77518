#include "runtime/timing.h"

#include <algorithm>
#include <cstdio>

namespace sluice::runtime {

std::string uneven_timing_note(const std::vector<double>& ms, const std::string& what, int threads, int cores) {
  if (ms.size() < 5) return {};
  std::vector<double> s = ms;
  std::sort(s.begin(), s.end());
  const double fastest = s.front(), median = s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
  if (!(fastest > 0) || median <= 1.5 * fastest) return {};
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "note: %s: the median run took %.1fx as long as the fastest (%.3f against %.3f ms): something else was "
                "probably using the cores for most of the runs, and these times say little. Time again on an idle "
                "machine (`top` shows what runs)%s.",
                what.c_str(), median / fastest, median, fastest,
                threads >= cores && cores > 1 ? ", or with fewer threads (-t) than the machine's cores" : "");
  return buf;
}

}  // namespace sluice::runtime
