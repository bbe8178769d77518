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
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace sluice::runtime
