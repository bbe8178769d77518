// Transpose, Concat, Split, Expand, Tile, DepthToSpace, SpaceToDepth.
#include <numeric>

#include "ops/tensor/strided_copy.h"
#include "ops/kernel.h"
#include "ops/util.h"

namespace sluice::ops {

void infer_Transpose(InferContext& ctx) {
  auto& p = ctx.node().p<graph::TransposeParams>();
  const auto& x = ctx.in(0);
  const size_t rank = x.shape.size();
  if (p.perm.empty()) {
    p.perm.resize(rank);
    std::iota(p.perm.rbegin(), p.perm.rend(), 0);
  }
  if (p.perm.size() != rank) ctx.fail("perm " + ints_str(p.perm) + " does not match rank " + std::to_string(rank));
  std::vector<bool> seen(rank, false);
  Shape out;
  for (int64_t a : p.perm) {
    if (a < 0 || a >= static_cast<int64_t>(rank) || seen[static_cast<size_t>(a)])
      ctx.fail("perm " + ints_str(p.perm) + " is not a permutation of 0.." + std::to_string(rank - 1));
    seen[static_cast<size_t>(a)] = true;
    out.push_back(x.shape[static_cast<size_t>(a)]);
  }
  ctx.set_output(0, x.dtype, out);
}

void reference_Transpose(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& perm = node.p<graph::TransposeParams>().perm;
  auto s = strides_of(in[0].shape);
  std::vector<int64_t> src_strides;
  for (int64_t a : perm) src_strides.push_back(s[static_cast<size_t>(a)]);
  strided_copy(in[0].as<const std::byte>(), 0, src_strides, out[0].as<std::byte>(), out[0].shape, dtype_size(in[0].dtype));
}

void infer_Concat(InferContext& ctx) {
  auto& p = ctx.node().p<graph::AxisParams>();
  const auto& x0 = ctx.in(0);
  const int64_t rank = static_cast<int64_t>(x0.shape.size());
  if (rank == 0) ctx.fail("inputs must have rank >= 1");
  p.axis = normalize_axis(ctx, p.axis, rank);
  Shape out = x0.shape;
  out[static_cast<size_t>(p.axis)] = 0;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) {
    const auto& xi = ctx.in(i);
    if (xi.dtype != x0.dtype) ctx.fail("inputs must share one dtype");
    if (static_cast<int64_t>(xi.shape.size()) != rank) ctx.fail("inputs must share one rank");
    for (int64_t d = 0; d < rank; ++d)
      if (d != p.axis && xi.shape[static_cast<size_t>(d)] != x0.shape[static_cast<size_t>(d)])
        ctx.fail("input " + std::to_string(i) + " has shape " + shape_str(xi.shape) + ", which does not match " +
                 shape_str(x0.shape) + " outside axis " + std::to_string(p.axis));
    out[static_cast<size_t>(p.axis)] += xi.shape[static_cast<size_t>(p.axis)];
  }
  ctx.set_output(0, x0.dtype, out);
}

namespace {
// Bytes of one "row" past `axis`, and the number of rows before it.
std::pair<int64_t, int64_t> outer_inner(const Shape& s, int64_t axis, size_t elem) {
  int64_t outer = 1, inner = static_cast<int64_t>(elem);
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    if (i < axis) outer *= s[static_cast<size_t>(i)];
    if (i > axis) inner *= s[static_cast<size_t>(i)];
  }
  return {outer, inner};
}
}  // namespace

void reference_Concat(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const int64_t axis = node.p<graph::AxisParams>().axis;
  const size_t es = dtype_size(out[0].dtype);
  auto [outer, inner] = outer_inner(out[0].shape, axis, es);
  const int64_t out_row = out[0].shape[static_cast<size_t>(axis)] * inner;
  int64_t at = 0;
  for (const auto& x : in) {
    const int64_t row = x.shape[static_cast<size_t>(axis)] * inner;
    for (int64_t o = 0; o < outer; ++o)
      std::copy_n(x.as<const std::byte>() + o * row, row, out[0].as<std::byte>() + o * out_row + at);
    at += row;
  }
}

void infer_Split(InferContext& ctx) {
  auto& p = ctx.node().p<graph::SplitParams>();
  const auto& x = ctx.in(0);
  p.axis = normalize_axis(ctx, p.axis, static_cast<int64_t>(x.shape.size()));
  const int64_t len = x.shape[static_cast<size_t>(p.axis)];
  const int64_t parts = static_cast<int64_t>(ctx.num_outputs());
  if (p.num_outputs != 0 && p.num_outputs != parts)
    ctx.fail("num_outputs is " + std::to_string(p.num_outputs) + " but the node has " + std::to_string(parts) + " outputs");
  if (p.num_outputs != 0 && ctx.has_input(1)) ctx.fail("takes either input 'split' or attribute num_outputs, not both");
  std::vector<int64_t> split = p.split;
  if (ctx.has_input(1)) split = ctx.require_ints(1, "split");
  if (split.empty()) {
    // Equal parts. With opset 18's num_outputs the last may be smaller, but not empty; without
    // it the axis must divide evenly.
    const int64_t chunk = (len + parts - 1) / parts;
    if (p.num_outputs == 0 && len % parts != 0)
      ctx.fail("axis size " + std::to_string(len) + " does not split into " + std::to_string(parts) +
               " equal parts; give the sizes in input 'split'");
    if (p.num_outputs != 0 && chunk * (parts - 1) >= len)
      ctx.fail("num_outputs " + std::to_string(parts) + " in parts of " + std::to_string(chunk) + " leaves the last part of axis size " +
               std::to_string(len) + " empty");
    for (int64_t i = 0; i < parts; ++i) split.push_back(std::max<int64_t>(0, std::min(chunk, len - i * chunk)));
  }
  if (static_cast<int64_t>(split.size()) != parts) ctx.fail("split has " + std::to_string(split.size()) + " sizes for " + std::to_string(parts) + " outputs");
  int64_t sum = 0;
  for (int64_t s : split) {
    if (s < 0) ctx.fail("split sizes must be >= 0");
    sum += s;
  }
  if (sum != len) ctx.fail("split sizes " + ints_str(split) + " do not add up to the axis size " + std::to_string(len));
  p.split = split;
  for (int64_t i = 0; i < parts; ++i) {
    Shape s = x.shape;
    s[static_cast<size_t>(p.axis)] = split[static_cast<size_t>(i)];
    ctx.set_output(static_cast<size_t>(i), x.dtype, s);
  }
}

void reference_Split(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::SplitParams>();
  const size_t es = dtype_size(in[0].dtype);
  auto [outer, inner] = outer_inner(in[0].shape, p.axis, es);
  const int64_t in_row = in[0].shape[static_cast<size_t>(p.axis)] * inner;
  int64_t at = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t row = p.split[i] * inner;
    if (out[i].data)
      for (int64_t o = 0; o < outer; ++o)
        std::copy_n(in[0].as<const std::byte>() + o * in_row + at, row, out[i].as<std::byte>() + o * row);
    at += row;
  }
}

void infer_Expand(InferContext& ctx) {
  const auto& x = ctx.in(0);
  auto target = ctx.require_ints(1, "shape");
  Shape out = broadcast_shapes(ctx, x.shape, target);
  checked_numel(ctx, out);
  ctx.set_output(0, x.dtype, out);
}

void reference_Expand(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  strided_copy(in[0].as<const std::byte>(), 0, broadcast_strides(in[0].shape, out[0].shape), out[0].as<std::byte>(),
               out[0].shape, dtype_size(in[0].dtype));
}

// Tile: the output viewed as [r0, d0, r1, d1, ...] reads the input with stride 0 on each ri.
void infer_Tile(InferContext& ctx) {
  const auto& x = ctx.in(0);
  const auto reps = ctx.require_ints(1, "repeats");
  if (reps.size() != x.shape.size())
    ctx.fail("repeats " + ints_str(reps) + " must have one entry per input dimension (input shape " + shape_str(x.shape) + ")");
  Shape out = x.shape;
  for (size_t d = 0; d < out.size(); ++d) {
    if (reps[d] < 0) ctx.fail("repeats " + ints_str(reps) + " has a negative entry");
    if (out[d] > 0 && reps[d] > INT64_MAX / out[d]) ctx.fail("repeats " + ints_str(reps) + " overflow the output size");
    out[d] *= reps[d];
  }
  checked_numel(ctx, out);
  ctx.set_output(0, x.dtype, out);
}

void reference_Tile(const graph::Node&, std::span<const TensorView> in, std::span<TensorView> out) {
  const Shape& xs = in[0].shape;
  const auto s = strides_of(xs);
  Shape view;
  std::vector<int64_t> src;
  for (size_t d = 0; d < xs.size(); ++d) {
    view.push_back(xs[d] ? out[0].shape[d] / xs[d] : 0);
    view.push_back(xs[d]);
    src.push_back(0);
    src.push_back(s[d]);
  }
  strided_copy(in[0].as<const std::byte>(), 0, src, out[0].as<std::byte>(), view, dtype_size(in[0].dtype));
}

// DepthToSpace / SpaceToDepth on [N, C, H, W]: a reshape, transpose and reshape, done as one
// strided copy from the input into the output viewed 6-D.
namespace {
void infer_block(InferContext& ctx, bool to_space) {
  const auto& x = ctx.in(0);
  const int64_t b = ctx.node().p<graph::BlockParams>().blocksize;
  if (x.shape.size() != 4) ctx.fail("input must be 4-D [N, C, H, W], got " + shape_str(x.shape));
  if (b > 65536) ctx.fail("blocksize " + std::to_string(b) + " is larger than 65536");
  Shape out = x.shape;
  if (to_space) {
    if (x.shape[1] % (b * b))
      ctx.fail("channels (" + std::to_string(x.shape[1]) + ") must be a multiple of blocksize^2 (blocksize " + std::to_string(b) + ")");
    out[1] /= b * b, out[2] *= b, out[3] *= b;
  } else {
    if (x.shape[2] % b || x.shape[3] % b)
      ctx.fail("height and width (" + std::to_string(x.shape[2]) + ", " + std::to_string(x.shape[3]) +
               ") must be multiples of blocksize " + std::to_string(b));
    if (out[1] > INT64_MAX / (b * b)) ctx.fail("channels x blocksize^2 overflow");
    out[1] *= b * b, out[2] /= b, out[3] /= b;
  }
  checked_numel(ctx, out);
  ctx.set_output(0, x.dtype, out);
}
}  // namespace

void infer_DepthToSpace(InferContext& ctx) { infer_block(ctx, true); }
void infer_SpaceToDepth(InferContext& ctx) { infer_block(ctx, false); }

void reference_DepthToSpace(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::BlockParams>();
  const Shape& xs = in[0].shape;
  const int64_t b = p.blocksize, c = xs[1] / (b * b), h = xs[2], w = xs[3], hw = h * w;
  // Output [n, c, h, bi, w, bj] reads input channel (bi * b + bj) * c + ch (DCR) or ch * b * b + bi * b + bj (CRD).
  const Shape view{xs[0], c, h, b, w, b};
  const std::vector<int64_t> src = p.crd ? std::vector<int64_t>{xs[1] * hw, b * b * hw, w, b * hw, 1, hw}
                                         : std::vector<int64_t>{xs[1] * hw, hw, w, b * c * hw, 1, c * hw};
  strided_copy(in[0].as<const std::byte>(), 0, src, out[0].as<std::byte>(), view, dtype_size(in[0].dtype));
}

namespace {
// DepthToSpace on NHWC data (between convs: PixelShuffle in super-resolution nets): output pixel
// (h b + i, w b + j) takes the input pixel (h, w)'s channels (i b + j) C .. + C (DCR, one run)
// or c b^2 + i b + j (CRD, every b^2-th). A copy per output pixel, where the NCHW reference
// walks every element through a generic strided loop between two reorders.
class NhwcDepthToSpace final : public Kernel {
 public:
  explicit NhwcDepthToSpace(const graph::BlockParams& p) : p_(p) {}
  void run(const KernelArgs& a) const override {
    const Shape& xs = a.in[0].shape;  // logical NCHW
    const int64_t b = p_.blocksize, cin = xs[1], c = cin / (b * b), n = xs[0], h = xs[2], w = xs[3];
    const float* x = a.in[0].as<const float>();
    float* y = a.out[0].as<float>();
    const bool crd = p_.crd;
#pragma omp parallel for collapse(2) schedule(static) if (a.in[0].numel() >= 65536)
    for (int64_t s = 0; s < n; ++s)
      for (int64_t hh = 0; hh < h; ++hh)
        for (int64_t i = 0; i < b; ++i) {
          float* row = y + ((s * h * b + hh * b + i) * w * b) * c;
          for (int64_t ww = 0; ww < w; ++ww) {
            const float* px = x + ((s * h + hh) * w + ww) * cin;
            for (int64_t j = 0; j < b; ++j) {
              float* out = row + (ww * b + j) * c;
              if (!crd) {
                std::copy_n(px + (i * b + j) * c, c, out);
              } else {
                const float* src = px + i * b + j;
                for (int64_t ch = 0; ch < c; ++ch) out[ch] = src[ch * b * b];
              }
            }
          }
        }
  }
  std::string name() const override { return "depth_to_space:nhwc"; }

 private:
  graph::BlockParams p_;
};
}  // namespace

std::unique_ptr<Kernel> make_nhwc_depth_to_space(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::DepthToSpace || n.layout != graph::Layout::NHWC || !nhwc_depth_to_space_applies(g, n))
    return nullptr;
  return std::make_unique<NhwcDepthToSpace>(n.p<graph::BlockParams>());
}

bool nhwc_depth_to_space_applies(const graph::Graph& g, const graph::Node& n) {
  if (n.op != graph::OpType::DepthToSpace || n.inputs.empty() || n.outputs.size() != 1) return false;
  const graph::Value& x = g.value(n.inputs[0]);
  const int64_t b = n.p<graph::BlockParams>().blocksize;
  return x.dtype == DType::Float32 && x.shape_known && x.shape.size() == 4 && b >= 1 && x.shape[1] % (b * b) == 0 &&
         g.value(n.outputs[0]).shape.size() == 4;
}

void reference_SpaceToDepth(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const Shape& xs = in[0].shape;
  const int64_t b = node.p<graph::BlockParams>().blocksize, c = xs[1], w = xs[3];
  // Output [n, bi, bj, c, h', w'] (channel (bi * b + bj) * c + ch) reads x[n, ch, h' b + bi, w' b + bj].
  const Shape view{xs[0], b, b, c, xs[2] / b, w / b};
  const std::vector<int64_t> src{c * xs[2] * w, w, 1, xs[2] * w, b * w, b};
  strided_copy(in[0].as<const std::byte>(), 0, src, out[0].as<std::byte>(), view, dtype_size(in[0].dtype));
}

}  // namespace sluice::ops
