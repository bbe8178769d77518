// How much memory this machine has, and sizes in GiB for messages: the runtime refuses a
// value, an arena or a generated input larger than the machine instead of failing inside
// an allocation (or being killed by the kernel for it).
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace sluice::runtime {

struct MemoryLimit {
  double bytes = 0;  // 0 when the system does not say
  std::string what;  // "this machine's 23.5 GiB of memory", or the limit that is lower
};

inline std::string gib(double bytes);

// The memory this process may use, in bytes: the machine's physical memory, or less where
// a limit says so: the address-space limit (`ulimit -v`, less what the process has mapped
// already) or a cgroup's memory limit (a container's). Over it, an allocation fails
// (std::bad_alloc) or the process is killed; Sluice refuses such sizes with a message first.
// Read once: it does not change while the process runs, and Tensor's constructor asks on
// every output of every run.
inline const MemoryLimit& memory_limit() {
  static const MemoryLimit limit = [] {
    MemoryLimit m;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) m.bytes = static_cast<double>(pages) * static_cast<double>(page);
    m.what = "this machine's " + gib(m.bytes) + " of memory";
    auto lower = [&](double b, const std::string& what) {
      if (b > 0 && (m.bytes <= 0 || b < m.bytes)) m.bytes = b, m.what = "the " + gib(b) + " " + what;
    };
    if (rlimit rl{}; getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
      double mapped = 0;  // the process's virtual size now: libraries, thread stacks, heap
      if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
        double vm_pages = 0;
        if (std::fscanf(f, "%lf", &vm_pages) == 1 && page > 0) mapped = vm_pages * static_cast<double>(page);
        std::fclose(f);
      }
      lower(static_cast<double>(rl.rlim_cur) - mapped, "left under this process's address-space limit (ulimit -v)");
    }
    for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"})
      if (std::FILE* f = std::fopen(path, "r")) {
        double b = 0;
        if (std::fscanf(f, "%lf", &b) == 1 && b > 0 && b < 1e18) lower(b, "of this process's cgroup memory limit");
        std::fclose(f);
      }
    return m;
  }();
  return limit;
}

// The bytes of memory_limit() (0 when the system does not say).
inline double machine_bytes() { return memory_limit().bytes; }

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
