// How much memory this machine has, and sizes in GiB for messages: the runtime refuses a
// value, an arena or a generated input larger than the machine instead of failing inside
// an allocation (or being killed by the kernel for it).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

namespace sluice::runtime {

// Physical memory in bytes (0 when the system does not say).
inline double machine_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

inline std::string gib(double bytes) {
  char buf[48];
  const double g = bytes / (1024.0 * 1024.0 * 1024.0);
  std::snprintf(buf, sizeof buf, g < 1e6 ? "%.1f GiB" : "%.3g GiB", g);  // 2^124 bytes: "2.2e+28 GiB", not 29 digits
  return buf;
}

}  // namespace sluice::runtime
