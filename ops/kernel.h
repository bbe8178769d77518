// Executable kernels. A Kernel is created once per plan step (weights packed,
// primitives created), then run many times, possibly from several threads at once:
// run() is const and keeps no per-call state outside its arguments.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ops/op_registry.h"

namespace sluice::ops {

// Which channels of a 4-D activation may be non-zero, per sample (design.md §4). A gated
// conv writes it for its output; channel-wise ops that keep zeros at zero pass it on; a
// gated conv reading it skips the other input channels. Unknown: every channel may be
// non-zero.
struct ChannelActivity {
  std::vector<std::vector<int32_t>> samples;  // per sample: sorted channel indices
  // The producer wrote only the listed channels, packed: sample b's pixel rows have
  // samples[b].size() values (the rest are zero). Only gated convs consume such tensors.
  bool compact = false;
  bool known() const { return !samples.empty(); }
};

// What a kernel that skips work really did in one call, per sample.
struct StepRecord {
  bool filled = false;
  std::vector<int64_t> executed_macs, gate_macs;
  std::vector<int32_t> active_in, active_out;
};

struct KernelArgs {
  std::span<const TensorView> in;
  std::span<TensorView> out;
  void* scratch = nullptr;  // scratch_bytes() bytes, 64-byte aligned, private to this call
  const ChannelActivity* in_activity = nullptr;  // of input 0, when the kernel wants it
  ChannelActivity* out_activity = nullptr;       // of output 0
  StepRecord* record = nullptr;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(const KernelArgs& args) const = 0;
  virtual std::string name() const = 0;
  virtual size_t scratch_bytes() const { return 0; }
  // Output i may be written over input `in_place_input()` (same bytes) when that input dies here.
  virtual int in_place_input() const { return -1; }
  // MACs one run executes when the kernel skips work statically (sparse weights); -1: the
  // node's count (ops::static_macs).
  virtual int64_t executed_macs() const { return -1; }
  // The direct planar conv, which can also read and write resident planes (Layout::Planar):
  // passes::keep_planes_resident keeps planar the values between such convs.
  virtual bool keeps_planes() const { return false; }
  // A kernel (the sparse convs) that reads its input and fused residual as, and writes its
  // output to, NHWC or resident planes in any mix, as the values' layouts say when it is made:
  // passes::keep_planes_resident may put any of them in planes, and relayout() then makes the
  // same kernel (the same measured choice) again for the layouts it set.
  virtual bool takes_planes() const { return false; }
  virtual std::unique_ptr<Kernel> relayout(const graph::Graph&, const graph::Node&) const { return nullptr; }
  // The same kernel for node n, also doing the work of the shortcut conv b (a sparse conv with
  // a 1x1 conv on the same input: make_sparse_conv_with_shortcut), writing b's output as its
  // second; null where it cannot.
  virtual std::unique_ptr<Kernel> with_shortcut(const graph::Graph&, const graph::Node&, const graph::Node&) const {
    return nullptr;
  }
  // What a measured choice noted in the name (with_note), "" if none.
  virtual std::string choice_note() const { return {}; }
};

struct KernelOptions {
  bool optimize = true;  // false: reference kernels everywhere
  SparseMode sparse = SparseMode::Measured;  // sparse weights: see SessionOptions::sparse
};

// Chooses and creates the kernel for a node whose shapes and layouts are final.
std::unique_ptr<Kernel> make_kernel(const graph::Graph& g, graph::NodeId id, const KernelOptions& opts);

// MACs of one execution of the node (conv, gemm, matmul; 0 for other ops): dense_macs
// counts the channels of the model as given, static_macs those left after static pruning.
int64_t dense_macs(const graph::Graph& g, const graph::Node& n);
int64_t static_macs(const graph::Graph& g, const graph::Node& n);

// The constant input `input` of n (a bias) as `size` floats, zero-padded to `padded` (>= size);
// all zeros when the node has no such input.
std::vector<float> constant_or_zeros(const graph::Graph& g, const graph::Node& n, size_t input, int64_t size,
                                     int64_t padded = -1);

// Whether every value of a float constant is finite. The kernels that pad a copy of their
// input with zeros (the direct planar conv, the sparse convs, the gated conv's direct and
// input-list kernels) multiply every weight by that padding: an inf or NaN weight would give
// NaN at the borders, where oneDNN (and ONNX Runtime's default optimised convs) skip the
// padded taps. They leave such weights to oneDNN, so one file gives one answer whichever kernel
// the timing would have picked. (Also the session's check of its inputs: float and double.)
bool all_finite(const Tensor& t);

// Factories of the fast kernels (each in its op's folder). They return nullptr when
// the node is outside what they handle, and the reference kernel runs instead.
std::unique_ptr<Kernel> make_onednn_conv(const graph::Graph& g, const graph::Node& n);
// An NHWC conv with no input channels (its weights have no element): the bias, the fused sum
// and activation, at every pixel. (oneDNN refuses such shapes.)
std::unique_ptr<Kernel> make_empty_conv(const graph::Graph& g, const graph::Node& n);
// Whether the node sums over nothing: an input has no element while the output has some (a
// Conv, Gemm or MatMul with K = 0). The fast kernels leave those to the reference kernels.
bool sums_over_nothing(const graph::Graph& g, const graph::Node& n);
// The same conv in oneDNN's own blocked activation layout, with reorders in and out (NHWC
// nodes; nullptr where oneDNN would keep NHWC anyway or runs a brgemm conv).
std::unique_ptr<Kernel> make_onednn_conv_blocked(const graph::Graph& g, const graph::Node& n);
// The NHWC conv in bands of output rows, one single-threaded oneDNN primitive per thread
// (batch 1, group 1, at least 2 rows per thread; nullptr otherwise or on 1 thread).
std::unique_ptr<Kernel> make_onednn_conv_rows(const graph::Graph& g, const graph::Node& n);
// The direct planar kernel as a dense conv (NHWC, group 1, stride 1 or 2, kh * kw <= 64).
// Its input, its output and fused residual may be resident planes (Layout::Planar).
std::unique_ptr<Kernel> make_direct_conv(const graph::Graph& g, const graph::Node& n);
bool make_direct_conv_applies(const graph::Graph& g, const graph::Node& n);
// The same conv writing resident planes (output 0), with the resident max pool that alone
// reads them fused in (output 1: the pool's output), or null. The pool runs on each band of
// rows as the conv finishes it, while it is in cache: a VGG stage's last conv and its pool.
std::unique_ptr<Kernel> make_pooled_direct_conv(const graph::Graph& g, const graph::Node& n, const graph::Node& pool);
// The kernel of a step whose work another step's kernel does ("fused into 'node'"): nothing.
std::unique_ptr<Kernel> make_done_by(const std::string& node);
// For passes::keep_planes_resident: whether a conv can run on the direct kernel with resident
// planes (what make_direct_conv takes, with known shapes); whether a pool reads and writes them
// (MaxPool, no dilation, no Indices output).
bool resident_conv(const graph::Graph& g, const graph::Node& n);
// Whether a conv's input, output or fused residual is in resident planes.
bool touches_resident(const graph::Graph& g, const graph::Node& n);
// Whether an NHWC conv reads an NCHW input as it is (ConvParams::reads_nchw, set by
// Plan::read_nchw_inputs). Such a conv, as one that touches resident planes, runs on the direct
// kernel, or on the sparse one it had (Kernel::relayout).
bool reads_nchw_input(const graph::Graph& g, const graph::Node& n);
// Whether make_dense_conv times the direct kernel against oneDNN on this conv (channel counts
// off oneDNN's 16-channel blocks, kernels larger than 1x1).
bool direct_timed(const graph::Graph& g, const graph::Node& n);
bool resident_pool(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_resident_pool(const graph::Graph& g, const graph::Node& n);
// oneDNN, or for channel counts off its 16-channel blocks (pruned models) the direct kernel
// where it measures faster on the node's shape.
std::unique_ptr<Kernel> make_dense_conv(const graph::Graph& g, const graph::Node& n);
// The dense conv, or (sparse weights, opts.sparse) the sparse kernel when it measures faster here.
std::unique_ptr<Kernel> make_conv(const graph::Graph& g, const graph::Node& n, SparseMode sparse);
std::unique_ptr<Kernel> make_gemm(const graph::Graph& g, const graph::Node& n, SparseMode sparse);
// MatMul with a constant 2-D B: oneDNN, or the sparse kernel where it measures faster.
std::unique_ptr<Kernel> make_matmul(const graph::Graph& g, const graph::Node& n, SparseMode sparse);
std::unique_ptr<Kernel> make_onednn_gemm(const graph::Graph& g, const graph::Node& n);
// ConvTranspose with constant weights on oneDNN's deconvolution (ops/conv/transpose.cpp), or null.
std::unique_ptr<Kernel> make_onednn_deconv(const graph::Graph& g, const graph::Node& n);
// MatMul with a constant 2-D float B (A of rank >= 2, NCHW-planned): oneDNN's inner product.
std::unique_ptr<Kernel> make_onednn_matmul(const graph::Graph& g, const graph::Node& n);
// The same MatMul, or Gemm in a form make_onednn_gemm takes, as a 1x1 conv over [1, rows, 1, K]
// NHWC (one of the two forms make_onednn_matmul and make_onednn_gemm time from 8 rows).
std::unique_ptr<Kernel> make_onednn_1x1(const graph::Graph& g, const graph::Node& n);
// Y[m, nn] = A[m, k] * W (+ bias) as that 1x1 conv, for a kernel that runs one inside it: W stored
// [nn, k] (trans_b) or [k, nn]; bias may be null; the weights are packed (copied) here.
std::unique_ptr<Kernel> make_onednn_matmul_1x1(int64_t m, int64_t k, int64_t nn, const void* w, bool trans_b,
                                               const void* bias, const graph::FusedActivation& act);
// A strided 2-D ConvTranspose on NHWC (ops/conv/transpose.cpp): where the stride equals the
// kernel and nothing is padded (U-Net's 2x2 stride 2 upsampling), a 1x1 conv to C_out x kh x kw
// channels whose values land in distinct output pixels; else (DCGAN's 4x4 stride 2 pad 1) one
// conv per output phase. The applies functions say where; group 1, constant weights.
bool stride_kernel_deconv_applies(const graph::Graph& g, const graph::Node& n);
bool phase_split_deconv_applies(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_nhwc_deconv(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_nhwc_pool(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_channel_affine(const graph::Graph& g, const graph::Node& n);
// The gated conv; on small maps the compact problem runs on the direct kernel or on oneDNN,
// whichever measures faster for the layer (the _direct/_onednn makers force one; _direct
// gives null where the direct kernel does not apply).
std::unique_ptr<Kernel> make_gated_conv(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_gated_conv_direct(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_gated_conv_onednn(const graph::Graph& g, const graph::Node& n);
// A conv with no gate of its own (GateForm::All) on gated::InputListConv; null for others.
std::unique_ptr<Kernel> make_gated_conv_input_list(const graph::Graph& g, const graph::Node& n);
// The gated conv with its oneDNN convs on oneDNN's blocked activation layout, reordered in and
// out (make_gated_conv_onednn measures that against NHWC on layers of >= 16M MACs); nullptr
// where oneDNN keeps NHWC.
std::unique_ptr<Kernel> make_gated_conv_blocked(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_reorder(const graph::Graph& g, const graph::Node& n);
// Transpose (0, 2, 3, 1) / (0, 3, 1, 2) of a 4-D float tensor: the tiled NCHW <-> NHWC copy.
std::unique_ptr<Kernel> make_layout_transpose(const graph::Graph& g, const graph::Node& n);
// The SluiceShift step, NHWC or (a shift that reads a model input as it is) NCHW.
std::unique_ptr<Kernel> make_nhwc_shift(const graph::Graph& g, const graph::Node& n);
// Gather on axis 1 of a 4-D float tensor with constant 1-D indices (a channel selection), on
// NCHW or NHWC data; is_channel_gather says whether a node is one (the layout pass asks).
bool is_channel_gather(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_channel_gather(const graph::Graph& g, const graph::Node& n);
// Resize / Upsample of H and W of a 4-D float map, NCHW or NHWC (ops/tensor/resize.cpp), or null;
// fast_resize_applies says where (passes::assign_layouts lets such a Resize take NHWC).
bool fast_resize_applies(const graph::Graph& g, const graph::Node& n);
// InstanceNormalization on NCHW float planes, vectorised and in parallel (ops/norm/instance_norm.cpp).
std::unique_ptr<Kernel> make_fast_instance_norm(const graph::Graph& g, const graph::Node& n);
// DepthToSpace (PixelShuffle) on NHWC float data, a copy per output pixel (ops/tensor/layout_ops.cpp);
// applies says where (passes::assign_layouts lets it take NHWC).
bool nhwc_depth_to_space_applies(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_nhwc_depth_to_space(const graph::Graph& g, const graph::Node& n);
std::unique_ptr<Kernel> make_fast_resize(const graph::Graph& g, const graph::Node& n);
// Concat of float tensors as contiguous block copies, on NCHW or NHWC data.
std::unique_ptr<Kernel> make_block_concat(const graph::Graph& g, const graph::Node& n);
// A 1x1 conv with a fused shift (ConvParams::pre_shift): the shift as a read offset in Sluice's
// own 1x1 kernel, or oneDNN over row tiles shifted first, whichever measures faster.
std::unique_ptr<Kernel> make_shift_conv(const graph::Graph& g, const graph::Node& n);
// Float32 Add/Sub/Mul/Div of equal shapes (or with a scalar, a per-channel or a row-broadcast
// operand), x ** 2, and the common activations.
std::unique_ptr<Kernel> make_fast_elementwise(const graph::Graph& g, const graph::Node& n);
// ReduceMean over a suffix of the axes of a float tensor, or GlobalAveragePool, on NCHW-ordered
// data: row means.
std::unique_ptr<Kernel> make_fast_reduce_mean(const graph::Graph& g, const graph::Node& n);
// Softmax of float NCHW-ordered data on the vector exp (ops/math/elementwise_fast.cpp), or null.
std::unique_ptr<Kernel> make_fast_softmax(const graph::Graph& g, const graph::Node& n);
// Runs a layout-agnostic reference kernel on NHWC data (shapes permuted, axes remapped).
std::unique_ptr<Kernel> make_nhwc_adapter(const graph::Graph& g, const graph::Node& n);

}  // namespace sluice::ops
