// NumPy .npy reading and writing (format versions 1.0-3.0, C order, little endian).
#pragma once

#include <string>

#include "sluice/sluice.h"

namespace sluice::npy {

// Throws Error naming the file and what is wrong (not .npy, Fortran order,
// unsupported dtype, truncated data, absurd shape ...).
Tensor load(const std::string& path);
Tensor parse(const void* data, size_t size, const std::string& name);
void save(const std::string& path, const Tensor& t);

}  // namespace sluice::npy
