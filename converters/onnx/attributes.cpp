#include "converters/onnx/attributes.h"

#include <algorithm>

namespace sluice::converters::onnx {

namespace op = ::ONNX_NAMESPACE;
using namespace graph;

AttributeReader::AttributeReader(const op::NodeProto& node, std::string where) : node_(node), where_(std::move(where)) {}

const op::AttributeProto* AttributeReader::get(const char* name) const {
  for (const auto& a : node_.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

bool AttributeReader::has(const char* name) const { return get(name) != nullptr; }

void AttributeReader::fail(const std::string& what) const { throw Error(where_ + ": " + what); }

const op::AttributeProto* AttributeReader::typed(const char* name, int type) const {
  const auto* a = get(name);
  if (a && a->type() != type)
    fail(std::string("attribute '") + name + "' has type " + op::AttributeProto::AttributeType_Name(a->type()) +
         ", expected " + op::AttributeProto::AttributeType_Name(static_cast<op::AttributeProto::AttributeType>(type)));
  return a;
}

int64_t AttributeReader::i(const char* name, int64_t dflt) const {
  const auto* a = typed(name, op::AttributeProto::INT);
  return a ? a->i() : dflt;
}
bool AttributeReader::flag(const char* name, bool dflt) const {
  const int64_t v = i(name, dflt ? 1 : 0);
  if (v != 0 && v != 1) fail(std::string("attribute '") + name + "' is " + std::to_string(v) + "; it must be 0 or 1");
  return v == 1;
}
float AttributeReader::f(const char* name, float dflt) const {
  const auto* a = typed(name, op::AttributeProto::FLOAT);
  return a ? a->f() : dflt;
}
std::string AttributeReader::s(const char* name, const std::string& dflt) const {
  const auto* a = typed(name, op::AttributeProto::STRING);
  return a ? a->s() : dflt;
}
std::vector<int64_t> AttributeReader::ints(const char* name) const {
  const auto* a = typed(name, op::AttributeProto::INTS);
  return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : std::vector<int64_t>{};
}

namespace {

// ONNX pads are [x1_begin, x2_begin, x1_end, x2_end]; for 2-D that is [top, left, bottom, right].
std::vector<int64_t> spatial(const AttributeReader& a, const char* name, size_t rank, int64_t dflt) {
  std::vector<int64_t> v = a.ints(name);
  if (v.empty()) return std::vector<int64_t>(rank, dflt);
  if (v.size() != rank) a.fail(std::string("attribute '") + name + "' has " + std::to_string(v.size()) +
                               " values, expected " + std::to_string(rank));
  for (int64_t x : v)
    if (x < (dflt == 0 ? 0 : 1))
      a.fail(std::string("attribute '") + name + "' has " + std::to_string(x) + "; every entry must be >= " +
             (dflt == 0 ? "0" : "1"));
  return v;
}

// A Conv's or ConvTranspose's auto_pad and pads attribute together: VALID with zero pads says one
// thing twice; any other pads contradict auto_pad (ONNX allows one of the two; ONNX Runtime refuses
// such a conv, and runs a pool with auto_pad's padding, as Sluice does).
void refuse_auto_pad_with_pads(const AttributeReader& a, const std::string& auto_pad, const std::vector<int64_t>& pads) {
  if (auto_pad == "NOTSET" || !a.has("pads")) return;
  if (auto_pad == "VALID" && std::all_of(pads.begin(), pads.end(), [](int64_t x) { return x == 0; })) return;
  a.fail("has both auto_pad '" + auto_pad + "' and explicit 'pads' (the ONNX spec allows one of them; ONNX Runtime "
         "refuses the node too): drop one of the two");
}

// kernel_shape (every entry >= 1) and auto_pad (one of the four modes), as given.
template <class P>
void parse_kernel_and_auto_pad(const AttributeReader& a, P& p) {
  p.kernel_shape = a.ints("kernel_shape");
  for (int64_t k : p.kernel_shape)
    if (k <= 0) a.fail("attribute 'kernel_shape' has " + std::to_string(k) + "; every entry must be >= 1");
  p.auto_pad = a.s("auto_pad", "NOTSET");
  if (p.auto_pad != "NOTSET" && p.auto_pad != "VALID" && p.auto_pad != "SAME_UPPER" && p.auto_pad != "SAME_LOWER")
    a.fail("unknown auto_pad '" + p.auto_pad + "'");
}

template <class P>
void parse_window(const AttributeReader& a, P& p) {
  parse_kernel_and_auto_pad(a, p);
  // Without kernel_shape (a Conv may leave it to the weight) the other attributes give the
  // rank: a 1-D conv's strides [s] or pads [b, e] (graph/passes/lift_1d.cpp); none: 2-D.
  size_t rank = p.kernel_shape.size();
  if (rank == 0) {
    const std::vector<int64_t> st = a.ints("strides"), di = a.ints("dilations"), pa = a.ints("pads");
    rank = !st.empty() ? st.size() : !di.empty() ? di.size() : !pa.empty() ? std::max<size_t>(pa.size() / 2, 1) : 2;
  }
  p.strides = spatial(a, "strides", rank, 1);
  p.dilations = spatial(a, "dilations", rank, 1);
  p.pads = spatial(a, "pads", rank * 2, 0);
}

Tensor tensor_attr(const AttributeReader& a, const op::AttributeProto& attr, const std::string& base_dir) {
  switch (attr.type()) {
    case op::AttributeProto::TENSOR:
      return tensor_from_proto(attr.t(), a.where() + ": attribute '" + attr.name() + "'", base_dir);
    case op::AttributeProto::FLOAT: return Tensor::from_vector<float>({}, {attr.f()});
    case op::AttributeProto::INT: return Tensor::from_vector<int64_t>({}, {attr.i()});
    case op::AttributeProto::FLOATS: {
      std::vector<float> v(attr.floats().begin(), attr.floats().end());
      return Tensor::from_vector<float>({static_cast<int64_t>(v.size())}, v);
    }
    case op::AttributeProto::INTS: {
      std::vector<int64_t> v(attr.ints().begin(), attr.ints().end());
      return Tensor::from_vector<int64_t>({static_cast<int64_t>(v.size())}, v);
    }
    default: a.fail("attribute '" + attr.name() + "' of this type is not supported");
  }
}

}  // namespace

Params parse_params(OpType t, const AttributeReader& a, int64_t opset, const std::string& base_dir) {
  switch (t) {
    case OpType::Conv: {
      ConvParams p;
      parse_window(a, p);
      refuse_auto_pad_with_pads(a, p.auto_pad, p.pads);  // (pools: auto_pad wins, as in ONNX Runtime)
      p.group = a.i("group", 1);
      if (p.group < 1) a.fail("group must be >= 1, got " + std::to_string(p.group));
      return p;
    }
    case OpType::ConvTranspose: {
      // The window attributes as given: their rank is the input's, which inference knows (a
      // 1-D ConvTranspose may give strides without kernel_shape).
      ConvTransposeParams p;
      parse_kernel_and_auto_pad(a, p);
      p.strides = a.ints("strides");
      p.dilations = a.ints("dilations");
      p.pads = a.ints("pads");
      refuse_auto_pad_with_pads(a, p.auto_pad, p.pads);
      p.group = a.i("group", 1);
      if (p.group < 1) a.fail("group must be >= 1, got " + std::to_string(p.group));
      p.output_padding = a.ints("output_padding");
      p.output_shape = a.ints("output_shape");
      return p;
    }
    case OpType::GlobalLpPool: {
      PoolParams p;
      p.p = a.i("p", 2);
      if (p.p < 1) a.fail("attribute 'p' must be >= 1, got " + std::to_string(p.p));
      return p;
    }
    case OpType::MaxPool:
    case OpType::AveragePool:
    case OpType::LpPool: {
      PoolParams p;
      parse_window(a, p);
      if (p.kernel_shape.empty()) a.fail("attribute 'kernel_shape' is required");
      p.p = a.i("p", 2);
      if (p.p < 1) a.fail("attribute 'p' must be >= 1, got " + std::to_string(p.p));
      p.ceil_mode = a.flag("ceil_mode", false);
      p.count_include_pad = a.flag("count_include_pad", false);
      if (a.i("storage_order", 0) != 0) a.fail("storage_order=1 is not supported");
      return p;
    }
    case OpType::Gemm: {
      GemmParams p;
      p.alpha = a.f("alpha", 1.f);
      p.beta = a.f("beta", 1.f);
      p.trans_a = a.flag("transA", false);
      p.trans_b = a.flag("transB", false);
      return p;
    }
    case OpType::BatchNormalization: {
      if (a.i("training_mode", 0) != 0) a.fail("training_mode=1 is not supported (export the model in eval mode)");
      // (Opsets 7-8: spatial=0 normalises each value by its own statistics, [C, H, W] of them;
      // with [C] ones it was run as spatial=1, where ORT refuses it.)
      if (a.i("spatial", 1) != 1)
        a.fail("spatial=0 (statistics per value, opsets 7-8) is not supported; export with spatial=1, the only form "
               "from opset 9 on");
      return BatchNormParams{a.f("epsilon", 1e-5f), {}};
    }
    case OpType::LayerNormalization:
      if (a.i("stash_type", 1) != 1) a.fail("stash_type other than 1 (float32) is not supported");
      return LayerNormParams{a.i("axis", -1), a.f("epsilon", 1e-5f)};
    case OpType::Concat:
      if (!a.has("axis")) a.fail("attribute 'axis' is required");
      return AxisParams{a.i("axis", 0)};
    case OpType::Flatten: return AxisParams{a.i("axis", 1)};
    case OpType::Gather:
    case OpType::GatherElements: return AxisParams{a.i("axis", 0)};
    case OpType::OneHot: return AxisParams{a.i("axis", -1)};
    case OpType::Mod: return ModParams{a.flag("fmod", false)};
    case OpType::Resize:
    case OpType::Upsample: {
      ResizeParams p;
      const std::string mode = a.s("mode", "nearest");
      if (mode != "nearest" && mode != "linear" && !(t == OpType::Resize && mode == "cubic"))
        a.fail("mode '" + mode + "' is not supported (nearest, linear" + (t == OpType::Resize ? ", cubic)" : ")"));
      p.mode = mode;
      p.cubic_a = a.f("cubic_coeff_a", -0.75f);
      p.exclude_outside = a.flag("exclude_outside", false);
      if (t == OpType::Upsample) {  // opset 7-9: asymmetric coordinates, nearest as ORT's "simple"
        p.coordinates = "asymmetric";
        p.nearest_mode = "simple";
        if (a.has("scales")) {
          for (int64_t i = 0; i < a.get("scales")->floats_size(); ++i) p.scales.push_back(a.get("scales")->floats(static_cast<int>(i)));
        }
        return p;
      }
      p.coordinates = a.s("coordinate_transformation_mode", opset < 11 ? "asymmetric" : "half_pixel");
      if (p.coordinates != "half_pixel" && p.coordinates != "pytorch_half_pixel" && p.coordinates != "align_corners" &&
          p.coordinates != "asymmetric" && p.coordinates != "tf_half_pixel_for_nn" && p.coordinates != "half_pixel_symmetric")
        a.fail("coordinate_transformation_mode '" + p.coordinates + "' is not supported");
      // Opset 10 has no nearest_mode: ONNX Runtime keeps Upsample's rule ("simple": floor when
      // upsampling, ceil when downsampling).
      p.nearest_mode = opset < 11 ? "simple" : a.s("nearest_mode", "round_prefer_floor");
      if (p.nearest_mode != "round_prefer_floor" && p.nearest_mode != "round_prefer_ceil" && p.nearest_mode != "floor" &&
          p.nearest_mode != "ceil" && p.nearest_mode != "simple")
        a.fail("nearest_mode '" + p.nearest_mode + "' is not supported");
      if (a.i("antialias", 0) != 0) a.fail("antialias = 1 is not supported");
      const std::string policy = a.s("keep_aspect_ratio_policy", "stretch");
      if (policy != "stretch") a.fail("keep_aspect_ratio_policy '" + policy + "' is not supported (stretch)");
      p.axes = a.ints("axes");
      return p;
    }
    case OpType::CumSum: return CumSumParams{a.flag("exclusive", false), a.flag("reverse", false)};
    case OpType::Softmax:
    case OpType::LogSoftmax:
    case OpType::Hardmax:
      return opset < 13 ? SoftmaxParams{a.i("axis", 1), true} : SoftmaxParams{a.i("axis", -1), false};
    case OpType::Split: {
      SplitParams p{a.i("axis", 0), a.ints("split"), a.i("num_outputs", 0)};
      if (a.has("num_outputs") && p.num_outputs < 1) a.fail("num_outputs must be >= 1, got " + std::to_string(p.num_outputs));
      return p;
    }
    case OpType::Transpose: return TransposeParams{a.ints("perm")};
    case OpType::Squeeze:
    case OpType::Unsqueeze: return AxesParams{a.ints("axes"), a.has("axes")};
    case OpType::ReduceMean:
    case OpType::ReduceSum:
    case OpType::ReduceMax:
    case OpType::ReduceMin:
    case OpType::ReduceProd:
    case OpType::ReduceL1:
    case OpType::ReduceL2:
    case OpType::ReduceSumSquare:
    case OpType::ReduceLogSum:
    case OpType::ReduceLogSumExp:
      // ReduceSum from opset 13, the others from 18, take the axes as input 1 instead.
      if (a.has("axes") && (opset >= 18 || (t == OpType::ReduceSum && opset >= 13)))
        a.fail("attribute 'axes' was replaced by input 'axes' at opset " + std::string(t == OpType::ReduceSum ? "13" : "18"));
      return ReduceParams{a.ints("axes"), a.has("axes"), a.flag("keepdims", true), a.flag("noop_with_empty_axes", false)};
    case OpType::Clip: {
      ClipParams p;
      p.min = a.f("min", p.min);
      p.max = a.f("max", p.max);
      return p;
    }
    case OpType::Gelu: {
      const std::string approx = a.s("approximate", "none");
      if (approx != "none" && approx != "tanh") a.fail("approximate must be 'none' or 'tanh', got '" + approx + "'");
      return GeluParams{approx == "tanh"};
    }
    case OpType::LeakyRelu: return AlphaBetaParams{a.f("alpha", 0.01f), 0.f};
    case OpType::Elu: return AlphaBetaParams{a.f("alpha", 1.f), 0.f};
    case OpType::Celu: return AlphaBetaParams{a.f("alpha", 1.f), 0.f};
    case OpType::ThresholdedRelu: return AlphaBetaParams{a.f("alpha", 1.f), 0.f};
    case OpType::Selu: return AlphaBetaParams{a.f("alpha", 1.67326319217681884765625f), a.f("gamma", 1.05070102214813232421875f)};
    case OpType::DepthToSpace:
    case OpType::SpaceToDepth: {
      if (!a.has("blocksize")) a.fail("attribute 'blocksize' is required");
      BlockParams p{a.i("blocksize", 0), false};
      if (p.blocksize < 1 || p.blocksize > 65536)
        a.fail("blocksize must be between 1 and 65536, got " + std::to_string(p.blocksize));
      if (t == OpType::DepthToSpace) {
        const std::string mode = a.s("mode", "DCR");
        if (mode != "DCR" && mode != "CRD") a.fail("mode must be 'DCR' or 'CRD', got '" + mode + "'");
        p.crd = mode == "CRD";
      }
      return p;
    }
    case OpType::IsInf: return IsInfParams{a.flag("detect_negative", true), a.flag("detect_positive", true)};
    case OpType::InstanceNormalization: return BatchNormParams{a.f("epsilon", 1e-5f), {}};
    case OpType::LRN: {
      if (!a.has("size")) a.fail("attribute 'size' is required");
      LrnParams p{a.f("alpha", 1e-4f), a.f("beta", 0.75f), a.f("bias", 1.f), a.i("size", 1)};
      if (p.size < 1) a.fail("attribute 'size' must be >= 1, got " + std::to_string(p.size));
      return p;
    }
    case OpType::ArgMax:
    case OpType::ArgMin: return ArgParams{a.i("axis", 0), a.flag("keepdims", true), a.flag("select_last_index", false)};
    case OpType::HardSigmoid: return AlphaBetaParams{a.f("alpha", 0.2f), a.f("beta", 0.5f)};
    case OpType::Einsum: {
      if (!a.has("equation")) a.fail("attribute 'equation' is required");
      return EinsumParams{a.s("equation", ""), {}, {}, {}};
    }
    case OpType::Cast: {
      if (!a.has("to")) a.fail("attribute 'to' is required");
      return CastParams{dtype_from_onnx(static_cast<int32_t>(a.i("to", 1)), a.where() + ": Cast target type")};
    }
    case OpType::Constant: {
      const op::AttributeProto* v = nullptr;
      for (const char* n : {"value", "value_float", "value_floats", "value_int", "value_ints", "value_string",
                            "value_strings", "sparse_value"})
        if (const auto* x = a.get(n)) {
          if (v) a.fail("has both '" + v->name() + "' and '" + n + "': a Constant takes exactly one value attribute");
          v = x;
        }
      if (v && (v->name() == "value_string" || v->name() == "value_strings" || v->name() == "sparse_value")) v = nullptr;
      if (!v) a.fail("needs a 'value' attribute (sparse and string constants are not supported)");
      return ConstantParams{tensor_attr(a, *v, base_dir)};
    }
    case OpType::ConstantOfShape: {
      const auto* v = a.get("value");
      Tensor value = v ? tensor_attr(a, *v, base_dir) : Tensor::from_vector<float>({1}, {0.f});
      if (value.numel() != 1) a.fail("attribute 'value' must hold exactly one element");
      return ConstantParams{value};
    }
    case OpType::Pad: {
      std::string mode = a.s("mode", "constant");
      if (mode != "constant" && mode != "reflect" && mode != "edge")
        a.fail("pad mode '" + mode + "' is not supported (constant, reflect, edge)");
      return PadParams{mode, {}};
    }
    case OpType::Reshape: return ReshapeParams{a.flag("allowzero", false)};
    case OpType::Shape: return ShapeParams{a.i("start", 0), a.i("end", INT64_MAX)};
    case OpType::TopK: return TopKParams{a.i("axis", -1), a.flag("largest", true), a.flag("sorted", true)};
    case OpType::ScatterElements:
    case OpType::ScatterND: {
      using R = ScatterParams::Reduction;
      const std::string r = a.s("reduction", "none");
      R red = R::None;
      if (r == "add") red = R::Add;
      else if (r == "mul") red = R::Mul;
      else if (r == "max") red = R::Max;
      else if (r == "min") red = R::Min;
      else if (r != "none") a.fail("reduction '" + r + "' is not one of none, add, mul, max, min");
      return ScatterParams{t == OpType::ScatterElements ? a.i("axis", 0) : 0, red};
    }
    default: return NoParams{};
  }
}

}  // namespace sluice::converters::onnx
