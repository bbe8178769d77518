// How much memory this machine has, and sizes in GiB for messages: the runtime refuses a
// value, an arena or a generated input larger than the machine instead of failing inside
// an allocation (or being killed by the kernel for it).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

namespace sluice::runtime {

// Physical memory in bytes (0 when the system does not say).
// Read once: it does not change while the process runs, and Tensor's constructor asks on
// every output of every run.
inline double machine_bytes() {
  static const double bytes = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
  }();
  return bytes;
}

// Memory available now without swapping (Linux's MemAvailable: free memory plus what the page
// cache can give back), or machine_bytes() where the system does not say. For work about to
// be done at once, such as the buffers of a kernel timing.
inline double available_bytes() {
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    double kb = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    std::fclose(f);
    if (kb >= 0) return kb * 1024.0;
  }
  return machine_bytes();
}

inline std::string gib(double bytes) {
  char buf[48];
  const double g = bytes / (1024.0 * 1024.0 * 1024.0);
  std::snprintf(buf, sizeof buf, g < 1e6 ? "%.1f GiB" : "%.3g GiB", g);  // 2^124 bytes: "2.2e+28 GiB", not 29 digits
  return buf;
}

}  // namespace sluice::runtime
