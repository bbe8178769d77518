// Runs layout-agnostic reference kernels on NHWC data. Elementwise and broadcasting
// semantics commute with a permutation of the axes, so an op on NHWC bytes is the
// same op on the permuted shape [N, H, W, C]; axis ops (Concat, Split) get their axis
// remapped. Lower-rank operands are right-aligned (padded to 4-D) first; the layout
// pass has already made sure their bytes are in the matching order.
#include "ops/kernel.h"
#include "ops/layout/reorder.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {

Shape nhwc_shape(const Shape& s) {
  Shape p(4 - std::min<size_t>(4, s.size()), 1);
  p.insert(p.end(), s.begin(), s.end());
  return {p[0], p[2], p[3], p[1]};
}

int64_t nhwc_axis(int64_t axis) {
  static constexpr int64_t kMap[] = {0, 3, 1, 2};  // NCHW axis -> position in NHWC
  return kMap[normalize_axis(axis, 4)];
}

class NhwcAdapter final : public Kernel {
 public:
  explicit NhwcAdapter(const graph::Node& n) : node_(n) {
    if (n.op == graph::OpType::Concat) node_.p<graph::AxisParams>().axis = nhwc_axis(n.p<graph::AxisParams>().axis);
    if (n.op == graph::OpType::Split) node_.p<graph::SplitParams>().axis = nhwc_axis(n.p<graph::SplitParams>().axis);
  }

  void run(const KernelArgs& a) const override {
    std::vector<TensorView> in(a.in.begin(), a.in.end()), out(a.out.begin(), a.out.end());
    const bool clip = node_.op == graph::OpType::Clip;
    for (size_t i = 0; i < in.size(); ++i)
      if (in[i].data && !(clip && i > 0)) in[i].shape = nhwc_shape(in[i].shape);
    for (auto& o : out)
      if (o.data) o.shape = nhwc_shape(o.shape);
    schema(node_.op).reference(node_, in, out);
  }
  std::string name() const override { return "reference:nhwc"; }

 private:
  graph::Node node_;
};

class Reorder final : public Kernel {
 public:
  explicit Reorder(const graph::Node& n) : p_(n.p<graph::ReorderParams>()) {}
  void run(const KernelArgs& a) const override {
    reorder_nchw_nhwc(a.in[0].as<const float>(), a.out[0].as<float>(), a.in[0].shape, p_.to == graph::Layout::NHWC);
  }
  std::string name() const override { return p_.to == graph::Layout::NHWC ? "reorder:nchw->nhwc" : "reorder:nhwc->nchw"; }

 private:
  graph::ReorderParams p_;
};

}  // namespace

std::unique_ptr<Kernel> make_nhwc_adapter(const graph::Graph&, const graph::Node& n) {
  // Only ops whose reference commutes with the permutation: elementwise ones and the axis ops.
  // A conv's weights, a pool's window or a norm's channel axis would be read in the wrong
  // order (a ConvTranspose, which takes NHWC only on its fast kernel, gave garbage here):
  // such a node without an NHWC kernel is an internal error, not a wrong answer.
  using graph::OpType;
  switch (n.op) {
    case OpType::Abs: case OpType::Neg: case OpType::Relu: case OpType::Sigmoid: case OpType::Tanh: case OpType::Sqrt:
    case OpType::Softplus:
    case OpType::LeakyRelu: case OpType::HardSigmoid: case OpType::HardSwish: case OpType::Clip: case OpType::Add:
    case OpType::Sub: case OpType::Mul: case OpType::Div: case OpType::Max: case OpType::Min: case OpType::PRelu:
    case OpType::Concat: case OpType::Split:
      return std::make_unique<NhwcAdapter>(n);
    default:
      return nullptr;
  }
}

std::unique_ptr<Kernel> make_reorder(const graph::Graph& g, const graph::Node& n) {
  if (g.value(n.inputs[0]).dtype != DType::Float32) return nullptr;
  return std::make_unique<Reorder>(n);
}

}  // namespace sluice::ops
