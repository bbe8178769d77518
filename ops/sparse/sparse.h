// Unstructured-sparse kernels (design.md §7) and the measured choice between them and the
// dense oneDNN kernels.
#pragma once

#include <memory>

#include "ops/kernel.h"

namespace sluice::ops {

// Below this fraction of zero weights the sparse kernels are not even timed.
constexpr double kMinSparsity = 0.5;

double zero_fraction(const Tensor& w);

// The direct sparse conv for an NHWC, group-1, stride 1 or 2, dilation 1 conv with constant
// weights; nullptr outside that.
std::unique_ptr<Kernel> make_sparse_conv(const graph::Graph& g, const graph::Node& n);

}  // namespace sluice::ops
