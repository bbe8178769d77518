// Unstructured-sparse kernels (design.md §7) and the measured choice between them and the
// dense oneDNN kernels.
#pragma once

#include <memory>

#include "ops/kernel.h"

namespace sluice::ops {

// Below this fraction of zero weights the sparse kernels are not even timed.
constexpr double kMinSparsity = 0.5;

double zero_fraction(const Tensor& w);

// How the direct sparse conv reads its input. Plain: unaligned vector reads of one planar
// copy. Copies: 16-float rows and one shifted copy of the input per horizontal tap shift, every
// read aligned. Split (AVX-512, up to 3 horizontal shifts): 16-float rows, one copy, and the
// taps of each shift summed apart at aligned reads, the sums added once per output block.
// Gather (maps of at most 64 output pixels): each tap's input
// pixels gathered into a row of their own (im2col, one channel block at a time, in L1), so
// that every read is aligned and only real output pixels are computed.
enum class SparseVariant { Plain, Copies, Split, Gather };

// The direct sparse conv for an NHWC, group-1, stride 1 or 2, dilation 1 conv with constant
// weights, reading as `variant` says; nullptr where it does not apply (the aligned variants
// also need rows that 16-float alignment widens by at most 15%), and then `why` (if given)
// says what is in the way.
std::unique_ptr<Kernel> make_sparse_conv(const graph::Graph& g, const graph::Node& n,
                                         SparseVariant variant = SparseVariant::Plain, std::string* why = nullptr);
// The same sparse conv of node n also doing the 1x1 conv b's work (fusable_shortcut): b reads
// n's input with n's stride and no padding, so its output pixel (y, x) reads the input pixel of
// n's tap (pad_top, pad_left) (a ResNet block's downsample beside its first conv): b's weights
// join n's as output channels with that one tap, and the kernel writes b's output (its layout,
// bias and activation) as its second. nullptr where b does not qualify.
bool fusable_shortcut(const graph::Graph& g, const graph::Node& n, const graph::Node& b);
std::unique_ptr<Kernel> make_sparse_conv_with_shortcut(const graph::Graph& g, const graph::Node& n,
                                                       const graph::Node& b, SparseVariant variant);
// The kernel of b's step then: nothing to run, b's non-zero MACs for the stats, planes as its
// output is laid out.
std::unique_ptr<Kernel> make_shortcut_done(const graph::Graph& g, const graph::Node& b, const std::string& by);
// Whether this build has the Split variant (its kernels were compiled for AVX-512).
bool sparse_split_available();

// CSR Gemm for Y = A * B^T + C (or A * B) with constant sparse B; the forms oneDNN's gemm takes.
std::unique_ptr<Kernel> make_sparse_gemm(const graph::Graph& g, const graph::Node& n);
// The same kernel for MatMul A [..., K] x constant B [K, N] (a Linear layer exported as MatMul;
// A's leading dims are its rows).
std::unique_ptr<Kernel> make_sparse_matmul(const graph::Graph& g, const graph::Node& n);

// Always: `sparse` (when not null). Measured: times both on the node's shapes and returns the
// sparse one if it takes less than `margin` times the dense one's time (0.9: it must win
// clearly, not within the machine's noise; more than 1 where it wins ties), its name noting
// both times. `zeros`: the weights' zero fraction, for that note; t_sparse, t_dense: both
// kernels' times when the caller has measured them already, in turn (ms; time_kernels), else < 0.
std::unique_ptr<Kernel> choose_measured(std::unique_ptr<Kernel> dense, std::unique_ptr<Kernel> sparse, SparseMode mode,
                                        double zeros, const graph::Graph& g, const graph::Node& n,
                                        double t_sparse = -1, double t_dense = -1, double margin = 0.9);

}  // namespace sluice::ops
