// FBS gate recognition (design.md §3). A gate is recognised by what it computes, not by
// the node sequence one exporter emits: every producer is followed through views
// (Unsqueeze, Reshape, Flatten, Squeeze, Identity) and commutative operand orders, and
// each form is checked against the semantics it must have:
//
//   x -> GlobalAveragePool | AveragePool(whole map) | ReduceMean(axes 2,3) | ReduceSum(axes 2,3) / HW
//        [of Abs(x)], or ReduceL1(x, axes 2,3) / HW -> views (the mean, as FBS), or the maximum
//        (GlobalMaxPool | ReduceMax(axes 2,3) | MaxPool(whole map)) or the L2 norm (ReduceL2(axes 2,3))
//        (or ReduceMean over W, then over H)
//     -> Gemm | MatMul [+ Add | - Sub] | 1x1 Conv [-> views] [-> Relu | Sigmoid | LeakyRelu | Clip | HardSigmoid
//        | Softplus | Elu | Tanh | Abs | HardSwish | SiLU (z * sigmoid(z)) | GELU | Softmax over the channels] [-> views] = g
//   winners:   [zeros +] ScatterElements(zeros, TopK(g, k).indices, TopK(g, k).values) (also of TopK(-g, k,
//              smallest), its values negated back; also into [N, C, 1, 1]
//              zeros, indices and values viewed as [N, k, 1, 1]), the indices also
//              the first k of a sorted TopK's (argsort), the values also GatherElements(g, indices)
//   losers:    ScatterElements(g, TopK(Neg(g), C-k).indices | TopK(g, C-k, smallest).indices, zeros)
//   mask:      Mul(g, [Cast] ScatterElements(zeros, TopK(g, k).indices (or argsort's first k), ones)), or the ones as
//              ReduceSum | ReduceMax(OneHot(TopK(g, k).indices, C, [0, 1]), the k axis)
//   (each ScatterElements also as index_put's ScatterND: pi[arange(N)[:, None], i] = v writes
//    at the pairs Concat(constant rows n, Unsqueeze(i)))
//   threshold: Mul(g, Cast(cmp)) | Where(cmp, g, 0) | Where(Not-cmp, 0, g) (masked_fill), cmp = g > t | g >= t (or t < g, t <= g,
//              g - t > 0, g - t >= 0, or
//              Not of the opposite test: Not(g < t) for g >= t, as opset 11 exports),
//              t = ReduceMin(TopK(g, K).values) | TopK(g, K).values at K-1 (Slice, Gather,
//              GatherElements with one constant index)
//   then       Mul(conv(x), views(pi) [-> Expand | Tile to conv(x)'s shape]) [+ beta | + beta * Cast(Greater(pi, 0)),
//              the product before or after the views] [-> Relu],
//              or Mul(Relu(conv(x)), views(pi)) (= Relu(conv(x) * pi), as pi >= 0),
//              or Where(views(pi) > 0, conv(x), 0) in place of the Mul (a 0/1 mask: 1 where kept and g > 0),
//              or Where(views(cmp), conv(x), 0) | Where(views(losers' cmp), 0, conv(x)) of a threshold test itself
//              (the test also viewed before its Cast to the 0/1 mask)
//
// The matched Conv/Mul/Add/Relu become one SluiceGatedConv node that computes exactly
// the same values (a suppressed channel takes the constant act(beta_c * m_c) the graph
// gives it). A candidate that fails a check keeps its generic ops, and the reason is
// recorded in Graph::gates for `sluice inspect`.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <set>

#include "graph/passes/passes.h"
#include "graph/passes/rewrite_util.h"

namespace sluice::graph::passes {

namespace {

struct Reject {
  std::string why;
};

class GateMatcher {
 public:
  explicit GateMatcher(Graph& g) : g_(g) {}

  const Node* prod(ValueId v, OpType t) const {
    if (v == kNoValue) return nullptr;
    NodeId p = g_.value(v).producer;
    return p >= 0 && !g_.node(p).dead && g_.node(p).op == t ? &g_.node(p) : nullptr;
  }

  // Follows views back to the value they re-shape.
  ValueId through_views(ValueId v) const {
    for (int guard = 0; guard < 16 && v != kNoValue; ++guard) {
      NodeId p = g_.value(v).producer;
      if (p < 0) break;
      const Node& n = g_.node(p);
      if (n.op != OpType::Unsqueeze && n.op != OpType::Reshape && n.op != OpType::Flatten &&
          n.op != OpType::Squeeze && n.op != OpType::Identity)
        break;
      v = n.inputs[0];
    }
    return v;
  }

  // Whether shapes a and b are the same but for size-1 axes at the end ([N, k] and [N, k, 1, 1]).
  static bool same_but_trailing_ones(Shape a, Shape b) {
    while (!a.empty() && a.back() == 1) a.pop_back();
    while (!b.empty() && b.back() == 1) b.pop_back();
    return a == b;
  }

  // v, or the value v views if the two differ only in size-1 axes at the end (idx[:, :, None,
  // None] of TopK's [N, k] indices, to scatter into [N, C, 1, 1] over axis 1: the same writes).
  ValueId through_trailing_ones(ValueId v) const {
    const ValueId src = through_views(v);
    return src != v && same_but_trailing_ones(g_.value(src).shape, g_.value(v).shape) ? src : v;
  }

  // v before Casts between int32 and int64 (tf2onnx casts TopK's indices to int32 and back):
  // they keep every channel index as it is.
  ValueId through_int_casts(ValueId v) const {
    auto is_int = [](DType t) { return t == DType::Int32 || t == DType::Int64; };
    for (int guard = 0; guard < 16 && v != kNoValue; ++guard) {
      const NodeId p = g_.value(v).producer;
      if (p < 0 || g_.node(p).op != OpType::Cast || !is_int(g_.value(v).dtype) ||
          !is_int(g_.value(g_.node(p).inputs[0]).dtype))
        break;
      v = g_.node(p).inputs[0];
    }
    return v;
  }

  // The Slice [0:e] over axis 1 of a sorted TopK's indices that idx is (the first k of
  // torch.argsort(g, descending=True)), k = min(e, K) set; else null.
  const Node* argsort_first_k(ValueId idx, int64_t& k) const {
    const Node* sl = prod(idx, OpType::Slice);
    if (!sl) return nullptr;
    const Node* st = prod(sl->inputs[0], OpType::TopK);
    auto starts = const_ints(g_, *sl, 1), ends = const_ints(g_, *sl, 2), axes = const_ints(g_, *sl, 3),
         steps = const_ints(g_, *sl, 4);
    if (!st || st->outputs.size() < 2 || st->outputs[1] != sl->inputs[0] || !st->p<TopKParams>().sorted ||
        starts != std::vector<int64_t>{0} || ends.size() != 1 || ends[0] <= 0 ||
        (axes != std::vector<int64_t>{1} && axes != std::vector<int64_t>{-1}) ||
        (!steps.empty() && steps != std::vector<int64_t>{1}))
      return nullptr;
    k = std::min(ends[0], topk_k(*st));
    return sl;
  }

  // The TopK whose indices output is idx (through int casts), or null.
  const Node* topk_of_indices(ValueId idx) const {
    const ValueId v = through_int_casts(idx);
    const Node* t = prod(v, OpType::TopK);
    return t && t->outputs.size() > 1 && t->outputs[1] == v ? t : nullptr;
  }

  int64_t numel(ValueId v) const {
    int64_t n = 1;
    for (int64_t d : g_.value(v).shape) n *= d;
    return n;
  }

  // A float (or double: a gate computed in double) tensor filled with `value`: a constant,
  // ConstantOfShape, or an Expand of one.
  static bool all_equal(const Tensor& t, float value) {
    for (int64_t i = 0; i < t.numel(); ++i)
      if (t.dtype() == DType::Float32 ? t.data<float>()[i] != value : t.data<double>()[i] != value) return false;
    return true;
  }
  bool is_fill(ValueId v, float value) const {
    if (v == kNoValue) return false;
    const Value& val = g_.value(v);
    if (val.is_constant())
      return (val.dtype == DType::Float32 || val.dtype == DType::Float64) && all_equal(val.constant, value);
    if (const Node* c = prod(v, OpType::ConstantOfShape)) {
      const Tensor& t = c->p<ConstantParams>().value;
      if (t.empty()) return value == 0.f;  // the default value is a float 0
      return (t.dtype() == DType::Float32 || t.dtype() == DType::Float64) && t.numel() == 1 && all_equal(t, value);
    }
    if (const Node* e = prod(v, OpType::Expand)) return is_fill(e->inputs[0], value);
    return false;
  }
  bool is_zero(ValueId v) const { return is_fill(v, 0.f); }

  std::optional<int64_t> const_scalar_int(ValueId v) const {
    if (v == kNoValue || !g_.value(v).is_constant()) return std::nullopt;
    const Tensor& t = g_.value(v).constant;
    if (t.numel() != 1) return std::nullopt;
    if (t.dtype() == DType::Int64) return t.data<int64_t>()[0];
    if (t.dtype() == DType::Int32) return t.data<int32_t>()[0];
    return std::nullopt;
  }

  // (A float64 constant, e.g. the weights of a predictor torch exported in double, is no gate's.)
  std::vector<float> floats(ValueId v) const {
    const Tensor& t = g_.value(v).constant;
    if (t.dtype() != DType::Float32)
      throw Reject{"'" + g_.value(v).name + "' is " + dtype_name(t.dtype()) + ": the gate computes in float32"};
    const float* p = t.data<float>();
    return std::vector<float>(p, p + t.numel());
  }

  // A TopK over axis 1 of a rank-2 value, or of an [N, C, 1, 1] one (a 1x1-conv predictor's
  // output, ranked as it is): returns K.
  int64_t topk_k(const Node& t) const {
    const Shape& s = g_.value(t.inputs[0]).shape;
    const bool nc = s.size() == 2 || (s.size() == 4 && s[2] == 1 && s[3] == 1);
    if (!nc || t.p<TopKParams>().axis != 1) throw Reject{"TopK " + t.name + " is not over the channel axis"};
    auto k = const_scalar_int(t.inputs[1]);
    if (!k) throw Reject{"TopK " + t.name + " has a K computed at run time"};
    return *k;
  }

  // The k-th largest value of g per row, as the graph computes it from TopK(g, K).values:
  // their ReduceMin over the channel axis (keepdims; k = K), or, TopK being sorted, their
  // entry k-1 (Slice k-1:k, or -1: for k = K, or Gather k-1 or -1 then a view). Returns k.
  int64_t kth_largest(ValueId thr, ValueId gv, const std::string& cmp) const {
    const Reject wrong{"the threshold of " + cmp + " is not the k-th largest of g (the minimum of TopK(g) values, or one entry of them)"};
    ValueId vals = kNoValue;
    bool at_position = true;  // entry K-1 of the values (they must be sorted), not their minimum
    int64_t pos = 0;          // that entry, -1 meaning the last
    std::optional<int64_t> slice_end;
    if (const Node* rmin = prod(thr, OpType::ReduceMin)) {
      const auto& rp = rmin->p<ReduceParams>();
      if (rp.axes != std::vector<int64_t>{1} || !rp.keepdims)
        throw Reject{"ReduceMin " + rmin->name + " must reduce the channel axis with keepdims"};
      vals = rmin->inputs[0];
      at_position = false;
    } else if (const Node* sl = prod(thr, OpType::Slice)) {
      auto starts = const_ints(g_, *sl, 1), ends = const_ints(g_, *sl, 2), axes = const_ints(g_, *sl, 3),
           steps = const_ints(g_, *sl, 4);
      if (!axes.empty() && axes[0] == -1) axes[0] = 1;  // the values are [N, K]: axis -1 is axis 1
      if (starts.size() != 1 || ends.size() != 1 || (!axes.empty() && axes != std::vector<int64_t>{1}) ||
          (axes.empty() && g_.value(sl->inputs[0]).shape.size() != 1) || (!steps.empty() && steps[0] != 1))
        throw wrong;
      vals = sl->inputs[0], pos = starts[0], slice_end = ends[0];
    } else if (const Node* ga = prod(through_views(thr), OpType::Gather)) {
      auto idx = const_scalar_int(ga->inputs[1]);
      const int64_t axis = ga->p<AxisParams>().axis;
      if (!idx || (axis != 1 && axis != -1) || g_.value(ga->inputs[1]).shape.size() > 1) throw wrong;
      vals = ga->inputs[0], pos = *idx;
    } else if (const Node* ge = prod(thr, OpType::GatherElements)) {
      // torch.gather(values, 1, full((N, 1), p)): entry p of every row; constant indices, all one value.
      const Value& iv = g_.value(ge->inputs[1]);
      const int64_t axis = ge->p<AxisParams>().axis;
      // One index row per sample: fewer rows (torch.gather(v, 1, full((1, 1), p))) give the
      // first sample's threshold to every sample, which no per-sample gate computes.
      if ((axis != 1 && axis != -1) || !iv.is_constant() || iv.shape.size() != 2 || iv.shape[1] != 1 ||
          iv.shape[0] != g_.value(thr).shape[0] || g_.value(thr).shape[0] != g_.value(gv).shape[0])
        throw wrong;
      const std::vector<int64_t> idx = const_ints(g_, *ge, 1);  // int64 or int32 (shape inference checked)
      if (idx.empty() || std::any_of(idx.begin(), idx.end(), [&](int64_t i) { return i != idx[0]; })) throw wrong;
      vals = ge->inputs[0], pos = idx[0];
    } else if (const Node* tk = prod(thr, OpType::TopK); tk && tk->outputs[0] == thr && topk_k(*tk) == 1) {
      // TopK(g, 1)'s values themselves: for k = 1 the largest is the k-th largest, and the
      // smallest the C-th (torch.kthvalue(g, 1)). (A Slice [0:1] of them is a no-op that
      // eliminate_identities has already removed.)
      vals = thr;
      at_position = !tk->p<TopKParams>().largest;  // entry 0
    } else {
      throw wrong;
    }
    const Node* t = prod(vals, OpType::TopK);
    const int64_t channels = g_.value(gv).shape.size() == 2 ? g_.value(gv).shape[1] : -1;
    if (!t || t->outputs[0] != vals || t->inputs[0] != gv || (at_position && !t->p<TopKParams>().sorted && topk_k(*t) > 1) ||
        (!t->p<TopKParams>().largest && (!at_position || channels < 1)))
      throw wrong;
    // Entry pos of the values sorted largest first is the (pos + 1)-th largest: entry K-1 of
    // TopK(g, K) (the last, also -1), or entry k-1 of all C sorted (torch.sort(g, descending)
    // exports as TopK with K = C). Their minimum is the K-th largest. Sorted smallest first,
    // entry pos is the (pos + 1)-th smallest, the (C - pos)-th largest: torch.sort(g) (K = C)
    // at C - k, or torch.kthvalue(g, C - k + 1) (K = C - k + 1, the last entry).
    const int64_t big_k = topk_k(*t);
    int64_t k = big_k;
    if (at_position) {
      if (pos < 0) pos += big_k;
      if (pos < 0 || pos >= big_k) throw wrong;
      k = t->p<TopKParams>().largest ? pos + 1 : channels - pos;
      if (k < 1) throw wrong;
    }
    // A Slice keeps exactly that entry: its end, clamped to [0, K], is pos + 1.
    if (slice_end && std::clamp<int64_t>(*slice_end < 0 ? *slice_end + big_k : *slice_end, 0, big_k) != pos + 1) throw wrong;
    // The threshold must broadcast as one value per row: [N, 1].
    const Shape& ts = g_.value(thr).shape;
    if (ts.size() != 2 || ts[1] != 1) throw wrong;
    return k;
  }

  // What n applies to src: Mul's other operand, or a of Where(a > 0, src, 0) (also 0 < a), the
  // selection applied as a hard mask of its positive entries. Else kNoValue.
  // A boolean mask itself applied, Where(mask, src, 0) or Where(mask, 0, src) (then *flip: the
  // mask says which channels are zeroed), is returned as it is: mask_selection reads it.
  ValueId applied_operand(const Node& n, ValueId src, bool* flip = nullptr) const {
    if (n.dead) return kNoValue;
    if (flip) *flip = false;
    if (n.op == OpType::Mul && n.inputs.size() == 2) return n.inputs[0] == src ? n.inputs[1] : n.inputs[0];
    if (n.op == OpType::Where && n.inputs.size() == 3 && n.inputs[0] != src && n.inputs[2] == src &&
        n.inputs[1] != src && is_zero(n.inputs[1]) && g_.value(n.inputs[0]).dtype == DType::Bool) {
      if (flip) *flip = true;
      return n.inputs[0];
    }
    if (n.op != OpType::Where || n.inputs.size() != 3 || n.inputs[1] != src || n.inputs[0] == src ||
        !is_zero(n.inputs[2]))
      return kNoValue;
    const Node* t = prod(n.inputs[0], OpType::Greater);
    if (t && t->inputs[0] != src && is_zero(t->inputs[1])) return t->inputs[0];
    t = prod(n.inputs[0], OpType::Less);
    if (t && t->inputs[1] != src && is_zero(t->inputs[0])) return t->inputs[1];
    return g_.value(n.inputs[0]).dtype == DType::Bool ? n.inputs[0] : kNoValue;
  }

  // Whether a tensor of shape s, broadcast against the conv's output (shape ys), is one value per
  // (sample, channel): [N, M, 1, 1], or [M, 1, 1] with one sample (pi.view(-1, 1, 1), which
  // only a batch of one runs).
  static bool per_sample_channel(const Shape& s, const Shape& ys) {
    return s == Shape{ys[0], ys[1], 1, 1} || (ys[0] == 1 && s == Shape{ys[1], 1, 1});
  }

  struct Selection {
    ValueId g = kNoValue;
    GateForm form = GateForm::Winners;
    int64_t k = 0;
    bool by_difference = false;  // the threshold test written (g - t) >= 0: NaN, so false, where g = t = inf
    bool unit = false;  // a hard 0/1 mask: pi = 1 where kept, not g
  };

  // index_put's indices for pi[arange(N)[:, None], i]: ScatterND's [N, k, 2] pairs (n, i[n, j]),
  // a Concat on the last axis of the constant rows n and of i (unsqueezed), i = TopK(g).indices.
  // That TopK, or null.
  const Node* index_put_topk(const Node& sc) const {
    if (sc.op != OpType::ScatterND || !plain_write(sc)) return nullptr;
    const Shape& ds = g_.value(sc.inputs[0]).shape;
    const Shape& is = g_.value(sc.inputs[1]).shape;
    const Node* c = prod(sc.inputs[1], OpType::Concat);
    if (!c || c->inputs.size() != 2 || ds.size() != 2 || is.size() != 3 || is[0] != ds[0] || is[2] != 2) return nullptr;
    if (const int64_t axis = c->p<AxisParams>().axis; axis != 2 && axis != -1) return nullptr;
    const Shape half{is[0], is[1], 1};
    const Value& rows = g_.value(c->inputs[0]);
    if (!rows.is_constant() || rows.shape != half || (rows.dtype != DType::Int64 && rows.dtype != DType::Int32))
      return nullptr;
    const std::vector<int64_t> r = const_ints(g_, *c, 0);
    for (int64_t n = 0; n < is[0]; ++n)
      for (int64_t j = 0; j < is[1]; ++j)
        if (r[static_cast<size_t>(n * is[1] + j)] != n) return nullptr;
    if (g_.value(c->inputs[1]).shape != half) return nullptr;
    const ValueId src = through_int_casts(through_views(through_int_casts(c->inputs[1])));  // [N, k] -> [N, k, 1]: keeps every entry's place
    const Node* t = prod(src, OpType::TopK);
    if (!t || t->outputs.size() < 2 || t->outputs[1] != src || g_.value(src).shape != Shape{is[0], is[1]}) return nullptr;
    return t;
  }

  // Whether scatter node sc writes its updates as they are: no reduction, or an addition into
  // zeros (scatter_add, exported at opset 16+ as reduction="add"), which writes each update
  // once where the indices are distinct, as a TopK's (and index_put's rows of them) are.
  bool plain_write(const Node& sc) const {
    const auto r = sc.p<ScatterParams>().reduction;
    return r == ScatterParams::Reduction::None || (r == ScatterParams::Reduction::Add && is_zero(sc.inputs[0]));
  }

  // The gate that scatter `sc` over the channels (ScatterElements on axis 1, or index_put's
  // ScatterND) writes at the indices `idx` of TopK t (kk of them): the winners (into zeros,
  // their TopK values or g gathered at them; `own`: idx is t's own output, so its values line
  // up) or the losers (the smallest of g, or of -g's largest, zeroed in g).
  Selection scattered(const Node& sc, const Node* t, int64_t kk, ValueId idx, bool own, int64_t m) const {
    Selection s;
    const ValueId data = sc.inputs[0], upd = sc.inputs[2];
    const std::string what = (sc.op == OpType::ScatterND ? "ScatterND " : "ScatterElements ") + sc.name;
    const bool largest = t->p<TopKParams>().largest;
    // TopK(Neg(g), k, smallest) picks g's k largest, the lower index first among equals as
    // TopK(g, k) does; its values are -g, which a Neg turns back (`(-g).topk(k, largest=False)`).
    const Node* neg_g = largest ? nullptr : prod(t->inputs[0], OpType::Neg);
    const Node* neg_vals = neg_g ? prod(upd, OpType::Neg) : nullptr;
    const ValueId vals = neg_vals ? neg_vals->inputs[0] : upd;
    // Views that keep the values' [N, k] shape keep every value's place.
    bool values_of_g = own && (!neg_g || neg_vals) && through_views(vals) == t->outputs[0] &&
                       same_but_trailing_ones(g_.value(vals).shape, g_.value(t->outputs[0]).shape);
    if (const Node* ge = prod(upd, OpType::GatherElements))
      values_of_g = values_of_g || (ge->inputs[0] == (neg_g ? neg_g->inputs[0] : t->inputs[0]) && ge->inputs[1] == idx &&
                                    (ge->p<AxisParams>().axis == 1 || ge->p<AxisParams>().axis == -1));
    if ((largest || neg_g) && is_zero(data) && (values_of_g || is_fill(upd, 1.f))) {
      // (Ones at the winners: a hard 0/1 mask, pi = 1 where kept.)
      s.g = neg_g ? neg_g->inputs[0] : t->inputs[0];
      s.form = GateForm::Winners;
      s.k = kk;
      s.unit = !values_of_g;
      return s;
    }
    if (is_zero(upd) && sc.p<ScatterParams>().reduction == ScatterParams::Reduction::None) {  // (g + 0 is no gate)
      // The losers zeroed in g, or in ones (a hard mask; g is then what the TopK ranks).
      s.unit = is_fill(data, 1.f);
      ValueId src = t->inputs[0];
      if (const Node* neg = prod(src, OpType::Neg); neg && largest && (s.unit || neg->inputs[0] == data)) {
        s.g = neg->inputs[0];
      } else if (!largest && (s.unit || src == data)) {
        s.g = src;
      } else {
        throw Reject{what + " zeroes channels that are not the smallest of its data"};
      }
      s.form = GateForm::Losers;
      s.k = m - kk;
      return s;
    }
    throw Reject{what + " is neither the winners form (zeros, indices, TopK values or ones) nor the losers form (g "
                 "or ones, indices of the smallest, zeros)"};
  }

  // g > t, t < g (exclusive) or g >= t, t <= g (inclusive), t the k-th largest of g; or the
  // negation of the opposite test, as opset 11 (no GreaterOrEqual) has PyTorch write g >= t:
  // Not(g < t), and likewise Not(g <= t), Not(t > g), Not(t >= g); or (g - t) compared with 0.
  // mv: the boolean test (flip: it says which channels are zeroed). gv: g, or kNoValue for a
  // hard mask, where g is whichever side of the test the other is the k-th largest of.
  std::optional<Selection> threshold_test(ValueId mv, ValueId gv, bool flip) const {
    const Node* negation = prod(mv, OpType::Not);
    const ValueId tested = negation ? negation->inputs[0] : mv;
    const bool negated = (negation != nullptr) != flip;  // the test says which channels stay when not negated
    for (OpType op : {OpType::Greater, OpType::GreaterOrEqual, OpType::Less, OpType::LessOrEqual}) {
      const Node* c = prod(tested, op);
      if (!c) continue;
      const bool g_first = (op == OpType::Greater || op == OpType::GreaterOrEqual) != negated;
      const ValueId g_side = c->inputs[g_first ? 0 : 1], other = c->inputs[g_first ? 1 : 0];
      // (g, t, by difference) readings of the test: g compared with t, or (g - t) with 0.
      struct Reading {
        ValueId g, thr;
        bool by_difference;
      };
      std::vector<Reading> readings;
      if (gv == kNoValue || g_side == gv) readings.push_back({g_side, other, false});
      if (const Node* d = prod(g_side, OpType::Sub); d && is_zero(other) && (gv == kNoValue || d->inputs[0] == gv))
        readings.push_back({d->inputs[0], d->inputs[1], true});
      Selection s;
      s.form = (op == OpType::GreaterOrEqual || op == OpType::LessOrEqual) != negated ? GateForm::ThresholdInclusive
                                                                                       : GateForm::Threshold;
      s.unit = gv == kNoValue;
      for (size_t i = 0; i < readings.size(); ++i) {
        s.g = readings[i].g;
        s.by_difference = readings[i].by_difference;
        if (!s.unit) {
          s.k = kth_largest(readings[i].thr, s.g, c->name);
          return s;
        }
        try {  // (a hard mask: the reading whose threshold is the k-th largest of its g)
          s.k = kth_largest(readings[i].thr, s.g, c->name);
          return s;
        } catch (const Reject&) {
          if (i + 1 == readings.size()) throw;
        }
      }
    }
    return std::nullopt;
  }

  // pi a hard 0/1 mask with no g multiplier (see selection_of), or nullopt.
  std::optional<Selection> hard_mask(ValueId pi, int64_t m) const {
    if (const Node* cast = prod(pi, OpType::Cast)) {
      // (The test viewed before the Cast: (g >= t)[:, :, None, None].float(); only a view that
      // adds size-1 axes at the end keeps each (sample, channel) in place, not a [1, N * C] one.)
      if (g_.value(cast->inputs[0]).dtype == DType::Bool)
        return threshold_test(through_trailing_ones(cast->inputs[0]), kNoValue, false);
      pi = cast->inputs[0];  // (one_hot's int64 ones, summed, then cast)
    }
    if (const Node* w = prod(pi, OpType::Where)) {
      if (is_fill(w->inputs[1], 1.f) && is_zero(w->inputs[2])) return threshold_test(w->inputs[0], kNoValue, false);
      if (is_zero(w->inputs[1]) && is_fill(w->inputs[2], 1.f)) return threshold_test(w->inputs[0], kNoValue, true);
      return std::nullopt;
    }
    const Node* rs = prod(pi, OpType::ReduceSum);
    if (!rs) rs = prod(pi, OpType::ReduceMax);
    const Node* oh = rs ? prod(rs->inputs[0], OpType::OneHot) : nullptr;
    const Node* t = oh ? topk_of_indices(oh->inputs[0]) : nullptr;
    if (!t || !one_hot_mask(*rs, *oh, *t, m))
      return std::nullopt;
    Selection s;
    s.g = t->inputs[0];
    s.form = GateForm::Winners;
    s.k = topk_k(*t);
    s.unit = true;
    return s;
  }

  // Whether rs(oh) writes ones at TopK t's k largest and zeros elsewhere: rs = ReduceSum or
  // ReduceMax over the k axis (TopK's indices are distinct, so the two agree) of oh =
  // OneHot(t.indices, C, [0, 1]).
  // The one-hot axis may also be 1 ([N, C, k], reduced over axis 2), and the reduction may keep
  // its axis (a size-1 axis that the views after it drop).
  bool one_hot_mask(const Node& rs, const Node& oh, const Node& t, int64_t m) const {
    const Value& ohv = g_.value(oh.outputs[0]);
    if (ohv.shape.size() != 3 || !t.p<TopKParams>().largest || !g_.value(oh.inputs[2]).is_constant()) return false;
    const int64_t oh_axis = oh.p<AxisParams>().axis < 0 ? oh.p<AxisParams>().axis + 3 : oh.p<AxisParams>().axis;
    const std::vector<int64_t>& axes = rs.p<ReduceParams>().axes;
    const int64_t k_axis = oh_axis == 2 ? 1 : 2;  // the axis of the k indices
    if ((oh_axis != 1 && oh_axis != 2) || ohv.shape[static_cast<size_t>(oh_axis)] != m || axes.size() != 1 ||
        (axes[0] < 0 ? axes[0] + 3 : axes[0]) != k_axis)
      return false;
    const Tensor& v = g_.value(oh.inputs[2]).constant;
    std::vector<double> vals;
    for (int64_t i = 0; i < v.numel(); ++i)
      vals.push_back(v.dtype() == DType::Float32 ? v.data<float>()[i]
                     : v.dtype() == DType::Int64 ? static_cast<double>(v.data<int64_t>()[i])
                     : v.dtype() == DType::Int32 ? v.data<int32_t>()[i]
                                                 : -1.0);
    return vals == std::vector<double>{0.0, 1.0};
  }

  // The selection, also computed in double (g.double().topk(k), scattered into zeros, then
  // .float()): float -> double -> float is exact, and TopK and the comparisons order the
  // widened values as they order the floats.
  Selection selection(ValueId pi, int64_t m) const {
    const Node* narrow = prod(pi, OpType::Cast);
    if (!narrow || narrow->p<CastParams>().to != DType::Float32 || g_.value(narrow->inputs[0]).dtype != DType::Float64)
      return selection_of(pi, m);
    Selection s = selection_of(narrow->inputs[0], m);
    // (A 0/1 mask made in double, torch.where(test, 1.0, 0.0).float(), from a float g.)
    if (s.unit && g_.value(s.g).dtype == DType::Float32) return s;
    const Node* widen = prod(s.g, OpType::Cast);
    if (!widen || widen->p<CastParams>().to != DType::Float64 || g_.value(widen->inputs[0]).dtype != DType::Float32)
      throw Reject{"the selection is computed in double on something that is not a float tensor widened"};
    s.g = widen->inputs[0];
    return s;
  }

  Selection selection_of(ValueId pi, int64_t m) const {
    Selection s;
    // zeros.scatter_add(...) exports as zeros + ScatterElements(zeros, ...): an added constant 0
    // of pi's shape changes no value (a -0 becomes +0, which a product does not tell apart).
    for (int guard = 0; guard < 4; ++guard) {
      const Node* add = prod(pi, OpType::Add);
      if (!add || add->inputs.size() != 2) break;
      const int zero_side = is_zero(add->inputs[0]) ? 0 : is_zero(add->inputs[1]) ? 1 : -1;
      if (zero_side < 0) break;
      const ValueId other = add->inputs[static_cast<size_t>(1 - zero_side)];
      if (g_.value(other).shape != g_.value(pi).shape) break;
      pi = other;
    }
    if (const Node* sc = prod(pi, OpType::ScatterElements)) {
      if (sc->p<ScatterParams>().axis != 1 || !plain_write(*sc))
        throw Reject{"ScatterElements " + sc->name + " is not a plain scatter over channels"};
      const ValueId idx = through_int_casts(through_trailing_ones(sc->inputs[1]));
      const Node* t = prod(idx, OpType::TopK);
      int64_t kk = t ? topk_k(*t) : 0;
      const Node* first_k = t ? nullptr : argsort_first_k(idx, kk);
      if (first_k) t = prod(first_k->inputs[0], OpType::TopK);
      if (!t || t->outputs.size() < 2 || (!first_k && t->outputs[1] != idx))
        throw Reject{"the scattered indices do not come from a TopK"};
      return scattered(*sc, t, kk, idx, !first_k, m);
    }
    // pi[arange(N)[:, None], i] = v (index_put: ScatterND at (n, i[n, j]) pairs), i from a TopK.
    if (const Node* sc = prod(pi, OpType::ScatterND)) {
      if (!plain_write(*sc))
        throw Reject{"ScatterND " + sc->name + " combines with what is there (a reduction), not a plain write"};
      const Node* t = index_put_topk(*sc);
      if (!t) throw Reject{"ScatterND " + sc->name + " does not write row n at TopK(g).indices[n]"};
      return scattered(*sc, t, topk_k(*t), t->outputs[1], true, m);
    }
    // g times a 0/1 mask (either operand order, the mask possibly through a Cast), or
    // Where(condition, g, 0): the mask either scatters ones at TopK(g, k).indices (winners),
    // or compares g with its k-th largest value (threshold).
    ValueId gv = kNoValue, mask = kNoValue;
    bool where = false, flip = false;  // flip: the mask says which channels are zeroed
    if (const Node* w = prod(pi, OpType::Where); w && is_zero(w->inputs[2])) {
      gv = w->inputs[1], mask = w->inputs[0], where = true;
    } else if (w && is_zero(w->inputs[1])) {  // g.masked_fill(cond, 0): Where(cond, 0, g)
      gv = w->inputs[2], mask = w->inputs[0], where = flip = true;
    }
    const Node* mul = where ? nullptr : prod(pi, OpType::Mul);
    for (int side = 0; side < (where ? 1 : 2) && (mul || where); ++side) {
      if (mul) gv = mul->inputs[static_cast<size_t>(side)], mask = mul->inputs[static_cast<size_t>(1 - side)];
      ValueId mv = mask;
      if (const Node* cast = prod(mv, OpType::Cast); cast && !where) mv = through_trailing_ones(cast->inputs[0]);
      // torch.where(cond, 1.0, 0.0) as the 0/1 mask: the condition cast.
      if (const Node* w01 = prod(mv, OpType::Where); w01 && !where && is_fill(w01->inputs[1], 1.f) && is_zero(w01->inputs[2]))
        mv = w01->inputs[0];
      // Ones scattered at the TopK indices: ScatterElements over axis 1, or index_put's ScatterND.
      const Node* sc = where ? nullptr : prod(mv, OpType::ScatterElements);
      const Node* t = sc ? topk_of_indices(sc->inputs[1]) : nullptr;
      int64_t kk = t ? topk_k(*t) : 0;
      // (Or at the first k of argsort(g, descending=True).)
      if (const Node* first_k = sc && !t ? argsort_first_k(through_int_casts(sc->inputs[1]), kk) : nullptr)
        t = prod(first_k->inputs[0], OpType::TopK);
      if (!sc && !where && (sc = prod(mv, OpType::ScatterND))) t = index_put_topk(*sc), kk = t ? topk_k(*t) : 0;
      if (sc) {
        if (!t || t->inputs[0] != gv) continue;
        if ((sc->op == OpType::ScatterElements && sc->p<ScatterParams>().axis != 1) ||
            !plain_write(*sc) || !t->p<TopKParams>().largest ||
            !is_zero(sc->inputs[0]) || !is_fill(sc->inputs[2], 1.f))
          throw Reject{"mask " + sc->name + " is not ones scattered at TopK(g).indices into zeros"};
        s.g = gv;
        s.form = GateForm::Winners;
        s.k = kk;
        return s;
      }
      // Ones at the TopK indices written with one_hot: ReduceSum (or ReduceMax: TopK's indices
      // are distinct, so the two agree) of OneHot(TopK(g, k).indices, C, [0, 1]) over the k axis.
      const Node* rs = prod(through_views(mv), OpType::ReduceSum);
      if (!rs) rs = prod(through_views(mv), OpType::ReduceMax);
      if (rs && !where) {
        const Node* oh = prod(rs->inputs[0], OpType::OneHot);
        const Node* t = oh ? topk_of_indices(oh->inputs[0]) : nullptr;
        if (t && t->inputs[0] == gv &&
            one_hot_mask(*rs, *oh, *t, m)) {
          s.g = gv;
          s.form = GateForm::Winners;
          s.k = topk_k(*t);
          return s;
        }
      }
      if (std::optional<Selection> th = threshold_test(mv, gv, flip)) return *th;
    }
    // No g multiplier: pi is a hard 0/1 mask itself (pi = 1 where kept), as dynamic channel
    // pruning with a straight-through estimator writes it: the condition cast to float, or
    // Where(cond, 1, 0) (Where(cond, 0, 1): cond says which channels go), or ones at the TopK
    // indices written with one_hot. (Ones scattered into zeros, or zeros into ones, are above.)
    if (std::optional<Selection> hard = hard_mask(pi, m)) return *hard;
    throw Reject{"the channel multiplier is not a top-k selection (ScatterElements of TopK, or a threshold mask)"};
  }

  struct Predictor {
    ValueId x = kNoValue;  // what the gate pools
    bool abs = false;
    Saliency saliency;  // g = act(...)
    GatedConvParams::Pool pool = GatedConvParams::Pool::Mean;
    std::vector<float> wg, bg;  // [M][C], [M]
    std::string desc;
  };

  // v = ReduceSum(x, axes {2, 3}) / (H * W), or times 1 / (H * W): the mean written as a sum;
  // or the same of ReduceL1 (sets l1): the mean of |x|. Returns the reduction, or null.
  const Node* mean_as_sum(ValueId v, bool& l1) const {
    const Node* op = prod(v, OpType::Div);
    const bool div = op != nullptr;
    if (!op) op = prod(v, OpType::Mul);
    if (!op) return nullptr;
    for (int side = 0; side < (div ? 1 : 2); ++side) {
      const Node* rs = prod(op->inputs[static_cast<size_t>(side)], OpType::ReduceSum);
      l1 = !rs;
      if (!rs) rs = prod(op->inputs[static_cast<size_t>(side)], OpType::ReduceL1);
      const ValueId cv = op->inputs[static_cast<size_t>(1 - side)];
      if (!rs || !g_.value(cv).is_constant() || numel(cv) != 1 || g_.value(cv).dtype != DType::Float32) continue;
      const Shape& xs = g_.value(rs->inputs[0]).shape;
      if (xs.size() != 4 || rs->p<ReduceParams>().axes != std::vector<int64_t>{2, 3}) continue;
      const double hw = static_cast<double>(xs[2] * xs[3]), k = floats(cv)[0];
      // Times 1 / (H W) only as the float nearest to it, as an exporter stores it: the gate
      // divides by H W, and a looser match could shift g enough to flip a near-tie in the top-k.
      if (div ? k == hw : static_cast<float>(k) == static_cast<float>(1.0 / hw)) return rs;
    }
    return nullptr;
  }

  // v = AveragePool(x) with one window over the whole H x W map (F.avg_pool2d(x, x.shape[2:])):
  // the global average. Returns the AveragePool, or null.
  const Node* whole_map_average(ValueId v) const {
    const Node* ap = prod(v, OpType::AveragePool);
    if (!ap) return nullptr;
    const auto& pp = ap->p<PoolParams>();
    const Shape& xs = g_.value(ap->inputs[0]).shape;
    const Shape& ys = g_.value(ap->outputs[0]).shape;
    if (xs.size() != 4 || ys.size() != 4 || ys[2] != 1 || ys[3] != 1 || pp.kernel_shape != Shape{xs[2], xs[3]})
      return nullptr;
    if (pp.auto_pad != "NOTSET" && pp.auto_pad != "VALID") return nullptr;
    for (int64_t d : pp.pads)
      if (d != 0) return nullptr;
    for (int64_t d : pp.dilations)
      if (d != 1) return nullptr;
    return ap;
  }

  // v = the maximum over H x W of a 4-D x (GlobalMaxPool, ReduceMax over axes 2 and 3, or an
  // unpadded MaxPool with one window over the whole map), or its L2 norm (ReduceL2 over 2 and
  // 3): the node, with `pool` set; or null.
  const Node* spatial_max_or_l2(ValueId v, GatedConvParams::Pool& pool) const {
    using Pool = GatedConvParams::Pool;
    if (const Node* n = prod(v, OpType::GlobalMaxPool)) {
      pool = Pool::Max;
      return n;
    }
    for (OpType t : {OpType::ReduceMax, OpType::ReduceL2})
      if (const Node* n = prod(v, t); n && g_.value(n->inputs[0]).shape.size() == 4 &&
                                      n->p<ReduceParams>().axes == std::vector<int64_t>{2, 3}) {
        pool = t == OpType::ReduceMax ? Pool::Max : Pool::L2;
        return n;
      }
    if (const Node* mp = prod(v, OpType::MaxPool); mp && (mp->outputs.size() < 2 || mp->outputs[1] == kNoValue)) {
      const auto& pp = mp->p<PoolParams>();
      const Shape& xs = g_.value(mp->inputs[0]).shape;
      const Shape& ys = g_.value(mp->outputs[0]).shape;
      bool whole = xs.size() == 4 && ys.size() == 4 && ys[2] == 1 && ys[3] == 1 && pp.kernel_shape == Shape{xs[2], xs[3]} &&
                   (pp.auto_pad == "NOTSET" || pp.auto_pad == "VALID");
      for (int64_t d : pp.pads) whole = whole && d == 0;
      for (int64_t d : pp.dilations) whole = whole && d == 1;
      if (whole) {
        pool = Pool::Max;
        return mp;
      }
    }
    return nullptr;
  }

  // F.gelu as torch exports it below opset 20: (z * (erf(z / c) + 1)) * 0.5 with c = sqrt 2
  // (either operand order of each Mul and of the Add): z, with `a` set; else kNoValue.
  ValueId gelu_input(const Node& outer, Saliency& a) const {
    auto scalar = [&](ValueId v, float want) {
      const Value& c = g_.value(v);
      return c.is_constant() && c.dtype == DType::Float32 && c.constant.numel() == 1 && c.constant.data<float>()[0] == want;
    };
    if (outer.inputs.size() != 2) return kNoValue;
    for (size_t side = 0; side < 2; ++side) {
      if (!scalar(outer.inputs[1 - side], 0.5f)) continue;
      const Node* inner = prod(outer.inputs[side], OpType::Mul);
      if (!inner || inner->inputs.size() != 2) continue;
      for (size_t s2 = 0; s2 < 2; ++s2) {
        const ValueId z = inner->inputs[s2];
        const Node* add = prod(inner->inputs[1 - s2], OpType::Add);
        if (!add || add->inputs.size() != 2) continue;
        for (size_t s3 = 0; s3 < 2; ++s3) {
          if (!scalar(add->inputs[1 - s3], 1.f)) continue;
          const Node* erf = prod(add->inputs[s3], OpType::Erf);
          const Node* div = erf ? prod(erf->inputs[0], OpType::Div) : nullptr;
          if (!div || div->inputs[0] != z) continue;
          const Value& c = g_.value(div->inputs[1]);
          if (!c.is_constant() || c.dtype != DType::Float32 || c.constant.numel() != 1) continue;
          const float cv = c.constant.data<float>()[0];
          if (!(std::fabs(cv - std::sqrt(2.f)) < 1e-3f)) continue;  // F.gelu's sqrt 2, not another function
          a = {Saliency::Act::Gelu, cv};
          return z;
        }
      }
    }
    return kNoValue;
  }

  // The saliency activation producing v, with its attributes in `a` and what it activates in
  // `in`; null when v is not one.
  const Node* saliency_act(ValueId v, Saliency& a, ValueId& in) const {
    using Act = Saliency::Act;
    a = {Saliency::Act::Identity};
    const NodeId id = g_.value(v).producer;
    if (id < 0 || g_.node(id).dead) return nullptr;
    const Node& n = g_.node(id);
    in = n.inputs.empty() ? kNoValue : n.inputs[0];
    switch (n.op) {
      case OpType::Mul:  // SiLU as z * sigmoid(z), hardswish as z * hardsigmoid(z) (below opset 14), either order
        if (const ValueId z = gelu_input(n, a); z != kNoValue) {
          in = z;
          return &n;
        }
        for (size_t side = 0; side < 2 && n.inputs.size() == 2; ++side) {
          const ValueId other = n.inputs[1 - side];
          if (const Node* sg = prod(n.inputs[side], OpType::Sigmoid); sg && sg->inputs[0] == other) {
            a = {Act::Silu};
            in = other;
            return &n;
          }
          if (const Node* hs = prod(n.inputs[side], OpType::HardSigmoid); hs && hs->inputs[0] == other) {
            a = {Act::HardSwish, hs->p<AlphaBetaParams>().alpha, hs->p<AlphaBetaParams>().beta};
            in = other;
            return &n;
          }
        }
        return nullptr;
      case OpType::HardSwish: a = {Act::HardSwish, 1.f / 6.f, 0.5f}; return &n;
      case OpType::Gelu:
        a = n.p<GeluParams>().tanh ? Saliency{Act::GeluTanh} : Saliency{Act::Gelu, std::sqrt(2.f)};
        return &n;
      case OpType::Relu: a = {Act::Relu}; return &n;
      case OpType::Sigmoid: a = {Act::Sigmoid}; return &n;
      case OpType::LeakyRelu: a = {Act::LeakyRelu, n.p<AlphaBetaParams>().alpha}; return &n;
      case OpType::HardSigmoid: a = {Act::HardSigmoid, n.p<AlphaBetaParams>().alpha, n.p<AlphaBetaParams>().beta}; return &n;
      case OpType::Softplus: a = {Act::Softplus}; return &n;
      case OpType::Elu: a = {Act::Elu, n.p<AlphaBetaParams>().alpha}; return &n;
      case OpType::Tanh: a = {Act::Tanh}; return &n;
      case OpType::Softmax: {  // over axis 1 of [N, M] or [N, M, 1, 1] (where opset < 13's flattening from axis 1 agrees)
        const Shape& s = g_.value(v).shape;
        const int64_t axis = n.p<SoftmaxParams>().axis < 0 ? n.p<SoftmaxParams>().axis + static_cast<int64_t>(s.size())
                                                           : n.p<SoftmaxParams>().axis;
        const bool nc11 = s.size() == 4 && s[2] == 1 && s[3] == 1;
        if (axis != 1 || (s.size() != 2 && !nc11)) return nullptr;
        a = {Act::Softmax};
        return &n;
      }
      case OpType::Abs: a = {Act::Abs}; return &n;
      case OpType::Clip: {
        float lo = 0.f, hi = 0.f;
        if (!clip_bounds(g_, n, lo, hi)) throw Reject{"the saliency's Clip " + n.name + " has bounds that are not constant scalars"};
        a = {Act::Clip, lo, hi};
        return &n;
      }
      default: return nullptr;
    }
  }

  Predictor predictor(ValueId g, int64_t m) const {
    // g = act(z): FBS's relu, or the sigmoid, leaky relu, relu6 (Clip), hard sigmoid, softplus,
    // elu, tanh, abs, hardswish or silu of other gating papers, or z itself. g may be a view of it ([N, M, 1, 1] flattened).
    // A winner whose g is 0 (a dead relu, an underflowed sigmoid) gets the suppressed channel's
    // value, as the graph gives it; one whose g is negative is active like any other.
    Predictor p;
    if (g_.value(g).dtype != DType::Float32)  // (a hard mask takes g as whatever its TopK ranks)
      throw Reject{std::string("the saliency g is ") + dtype_name(g_.value(g).dtype) + ": the gate computes it in float32"};
    ValueId z = through_views(g);
    if (ValueId in = kNoValue; saliency_act(z, p.saliency, in)) {
      z = in;
      // relu6 as torch exports it at some versions: Clip(Relu(z), 0, 6), which is Clip(z, 0, 6).
      const Node* relu = prod(z, OpType::Relu);
      if (relu && p.saliency.act == Saliency::Act::Clip && p.saliency.alpha >= 0.f) z = relu->inputs[0];
      // relu(relu(z)) is relu(z).
      for (int guard = 0; guard < 4 && p.saliency.act == Saliency::Act::Relu && (relu = prod(z, OpType::Relu)); ++guard)
        z = relu->inputs[0];
    }
    ValueId f = kNoValue;
    std::vector<float> w;  // as [C][M] or [M][C]
    bool w_is_mc = false;
    int64_t c = 0;
    if (const Node* gemm = prod(z, OpType::Gemm)) {
      const auto& gp = gemm->p<GemmParams>();
      if (gp.trans_a || gp.activation.kind != Activation::None) throw Reject{"Gemm " + gemm->name + " has transA"};
      const Value& wv = g_.value(gemm->inputs[1]);
      if (!wv.is_constant() || wv.shape.size() != 2) throw Reject{"gate weights of " + gemm->name + " are not constant"};
      w = floats(gemm->inputs[1]);
      for (float& x : w) x *= gp.alpha;
      w_is_mc = gp.trans_b;
      c = gp.trans_b ? wv.shape[1] : wv.shape[0];
      if ((gp.trans_b ? wv.shape[0] : wv.shape[1]) != m) throw Reject{"gate Gemm " + gemm->name + " does not give one g per output channel"};
      p.bg.assign(static_cast<size_t>(m), 0.f);
      if (gemm->inputs.size() > 2 && gemm->inputs[2] != kNoValue) {
        if (!g_.value(gemm->inputs[2]).is_constant() || numel(gemm->inputs[2]) != m)
          throw Reject{"gate bias of " + gemm->name + " is not a constant per-channel vector"};
        p.bg = floats(gemm->inputs[2]);
        for (float& x : p.bg) x *= gp.beta;
      }
      f = gemm->inputs[0];
      p.desc = "Gemm";
    } else if (const Node* cv = prod(through_views(z), OpType::Conv)) {
      // A 1x1 conv on the pooled [N, C, 1, 1] saliency (the squeeze-and-excitation way of
      // writing the predictor): W [M, C, 1, 1] is the Gemm's [M, C]. Its [N, M, 1, 1] output may
      // be flattened before the Relu (elementwise: the same values either way).
      const auto& cp = cv->p<ConvParams>();
      const Value& wv = g_.value(cv->inputs[1]);
      const Shape& xs = g_.value(cv->inputs[0]).shape;
      bool plain = cp.group == 1 && !cp.fused_sum && cp.activation.kind == Activation::None && cp.pre_shift.empty();
      for (int64_t pad : cp.pads) plain = plain && pad == 0;
      if (!plain || !wv.is_constant() || wv.shape.size() != 4 || wv.shape[0] != m || wv.shape[2] != 1 ||
          wv.shape[3] != 1 || xs.size() != 4 || xs[2] != 1 || xs[3] != 1)
        throw Reject{"gate conv " + cv->name + " is not a plain 1x1 conv with constant weights on a pooled [N, C, 1, 1] input"};
      w = floats(cv->inputs[1]);
      w_is_mc = true;
      c = wv.shape[1];
      p.bg.assign(static_cast<size_t>(m), 0.f);
      if (cv->inputs.size() > 2 && cv->inputs[2] != kNoValue) {
        if (!g_.value(cv->inputs[2]).is_constant() || numel(cv->inputs[2]) != m)
          throw Reject{"gate bias of " + cv->name + " is not a constant per-channel vector"};
        p.bg = floats(cv->inputs[2]);
      }
      f = cv->inputs[0];
      p.desc = "1x1 Conv";
    } else {
      // The bias added, or subtracted: s W - b (b - s W negates W too).
      const Node* add = prod(z, OpType::Add);
      if (!add) add = prod(z, OpType::Sub);
      ValueId mm_out = z;
      float w_sign = 1.f;
      p.bg.assign(static_cast<size_t>(m), 0.f);
      if (add) {
        int bias_side = g_.value(add->inputs[1]).is_constant() ? 1 : g_.value(add->inputs[0]).is_constant() ? 0 : -1;
        // (One value, a scalar or [1], is every channel's bias.)
        const int64_t nb = bias_side < 0 ? 0 : numel(add->inputs[bias_side]);
        if (bias_side < 0 || (nb != m && nb != 1))
          throw Reject{"the gate's " + std::string(add->op == OpType::Sub ? "Sub " : "Add ") + add->name +
                       " is not a per-channel bias"};
        p.bg = floats(add->inputs[bias_side]);
        if (nb == 1) p.bg.assign(static_cast<size_t>(m), p.bg[0]);
        if (add->op == OpType::Sub && bias_side == 1)
          for (float& x : p.bg) x = -x;
        if (add->op == OpType::Sub && bias_side == 0) w_sign = -1.f;
        mm_out = add->inputs[1 - bias_side];
      }
      const Node* mm = prod(mm_out, OpType::MatMul);
      if (!mm)
        throw Reject{"g is not computed by a Gemm, a MatMul [+ or - a bias] or a 1x1 Conv, through one of Relu, Sigmoid, "
                     "LeakyRelu, Clip, HardSigmoid, Softplus, Elu, Tanh, Abs, HardSwish, SiLU or GELU"};
      const Value& wv = g_.value(mm->inputs[1]);
      if (!wv.is_constant() || wv.shape.size() != 2 || wv.shape[1] != m)
        throw Reject{"gate weights of MatMul " + mm->name + " are not a constant [C, " + std::to_string(m) + "] matrix"};
      w = floats(mm->inputs[1]);
      for (float& x : w) x *= w_sign;
      c = wv.shape[0];
      f = mm->inputs[0];
      p.desc = !add ? "MatMul" : add->op == OpType::Sub ? "MatMul+Sub" : "MatMul+Add";
    }
    // The pooled saliency, possibly times a power of two (fc(mean(x) * 0.5)), which goes into
    // the weights.
    ValueId pooled = through_views(f);
    if (numel(f) != g_.value(f).shape[0] * c) throw Reject{"the gate's input does not have one value per channel"};
    bool l1 = false;
    float pool_scale = 1.f;
    for (int guard = 0; guard < 4 && !pooled_form(pooled, p, l1); ++guard) {
      const Node* sn = prod(pooled, OpType::Mul);
      if (!sn) sn = prod(pooled, OpType::Div);
      if (!sn) break;
      const int side = sn->op == OpType::Div ? 0 : scalar_const(sn->inputs[1]) ? 0 : 1;
      const ValueId sv = sn->inputs[static_cast<size_t>(1 - side)];
      if (!scalar_const(sv)) break;
      // Only a power of two (or minus one): (s k) W then rounds as s (k W) does, so that no near
      // tie in the top-k flips (0.1 or 1/3 did, found by a review).
      const float k = floats(sv)[0];
      int e = 0;
      if (!std::isfinite(k) || k == 0.f || std::fabs(std::frexp(k, &e)) != 0.5f || e < -20 || e > 22) break;
      pool_scale = sn->op == OpType::Div ? pool_scale / k : pool_scale * k;
      pooled = through_views(sn->inputs[static_cast<size_t>(side)]);
      p.desc = (sn->op == OpType::Div ? "/ a scalar, " : "x a scalar, ") + p.desc;
    }
    if (p.x == kNoValue) {
      // A hidden layer (g = act(fc2(act(fc1(pool(x)))))): say so, rather than that the pool is missing.
      Saliency hidden_act;
      ValueId hidden = pooled;
      if (ValueId in = kNoValue; saliency_act(hidden, hidden_act, in)) hidden = through_views(in);
      if (prod(hidden, OpType::Gemm) || prod(hidden, OpType::MatMul) || prod(hidden, OpType::Add))
        throw Reject{"the predictor has a hidden layer (a Linear before the one that gives g): one Linear between the "
                     "pooled input and g is supported"};
      throw Reject{"the gate's input is not a global average (GlobalAveragePool, an AveragePool over the whole map, "
                   "ReduceMean over H, W, or their ReduceSum or ReduceL1 divided by H * W), maximum (GlobalMaxPool, "
                   "ReduceMax over H, W, a MaxPool over the whole map) or L2 norm (ReduceL2 over H, W, or the square "
                   "root of the sum of squares), or one times a power of two"};
    }
    if (pool_scale != 1.f)
      for (float& x : w) {
        const float before = x;
        x *= pool_scale;
        if (!std::isfinite(x) || (before != 0.f && std::fabs(x) < std::numeric_limits<float>::min()))
          throw Reject{"the scalar that scales the gate's pooled input would overflow or underflow its weights"};
      }
    if (l1) {
      p.abs = true;
    } else if (const Node* a = prod(p.x, OpType::Abs)) {
      p.x = a->inputs[0];
      p.abs = true;
    }
    using Pool = GatedConvParams::Pool;
    p.desc = std::string(p.pool == Pool::Max ? "max" : p.pool == Pool::L2 ? "L2 norm of" : "mean") + (p.abs ? " |x|" : " x") +
             " via " + p.desc;
    if (g_.value(p.x).shape.size() != 4 || g_.value(p.x).shape[1] != c)
      throw Reject{"the gate pools a tensor with other than " + std::to_string(c) + " channels"};
    p.wg.resize(static_cast<size_t>(m * c));
    for (int64_t o = 0; o < m; ++o)
      for (int64_t i = 0; i < c; ++i)
        p.wg[static_cast<size_t>(o * c + i)] = w_is_mc ? w[static_cast<size_t>(o * c + i)] : w[static_cast<size_t>(i * m + o)];
    return p;
  }

  bool scalar_const(ValueId v) const {
    return g_.value(v).is_constant() && numel(v) == 1 && g_.value(v).dtype == DType::Float32;
  }

  // For ReduceMean rm over axes 1 and 2 of a 4-D tensor h (or of |h|): the NCHW tensor whose H
  // and W those axes are (h's Transpose(0, 3, 1, 2) that reads it, or the x of h =
  // Transpose(x, [0, 2, 3, 1])); else kNoValue.
  bool over_axes_1_2(const Node* rm) const {
    const auto& axes = rm->p<ReduceParams>().axes;
    return g_.value(rm->inputs[0]).shape.size() == 4 &&
           (axes == std::vector<int64_t>{1, 2} || axes == std::vector<int64_t>{-3, -2});
  }
  ValueId channel_last_view(const Node* rm) const {
    if (!over_axes_1_2(rm)) return kNoValue;
    ValueId h = rm->inputs[0];
    if (const Node* a = prod(h, OpType::Abs)) h = a->inputs[0];
    // h = Transpose(x, [0, 2, 3, 1]) itself (the NCHW x, which the conv reads once the Transpose
    // back to NCHW folded with it): the mean over h's axes 1, 2 is the mean over x's 2, 3.
    if (const Node* t = prod(h, OpType::Transpose); t && t->p<TransposeParams>().perm == std::vector<int64_t>{0, 2, 3, 1})
      return t->inputs[0];
    for (NodeId r : g_.value(h).consumers) {
      const Node& t = g_.node(r);
      if (!t.dead && t.op == OpType::Transpose && t.outputs.size() == 1 &&
          t.p<TransposeParams>().perm == std::vector<int64_t>{0, 3, 1, 2})
        return t.outputs[0];
    }
    return kNoValue;
  }

  // Whether `pooled` is one of the spatial poolings of x that the gated conv computes; sets
  // p.x, p.pool, p.desc (and l1 for a ReduceL1).
  bool pooled_form(ValueId pooled, Predictor& p, bool& l1) const {
    l1 = false;  // (mean_as_sum sets it while it looks, also where it finds nothing)
    bool sum_of_abs = false;
    if (const Node* gap = prod(pooled, OpType::GlobalAveragePool)) {
      p.x = gap->inputs[0];
      p.desc = "GlobalAveragePool, " + p.desc;
    } else if (const Node* ap = whole_map_average(pooled)) {
      p.x = ap->inputs[0];
      p.desc = "AveragePool over the whole map, " + p.desc;
    } else if (const Node* rm = prod(pooled, OpType::ReduceMean)) {
      const Value& xin = g_.value(rm->inputs[0]);
      // x.mean(3).mean(2) (or mean(-1) twice): the mean over W, then over H, is the mean over
      // both (up to float rounding, as any summation order).
      const Node* inner = prod(rm->inputs[0], OpType::ReduceMean);
      if (inner && xin.shape.size() == 3 && rm->p<ReduceParams>().axes == std::vector<int64_t>{2} &&
          !rm->p<ReduceParams>().keepdims && inner->p<ReduceParams>().axes == std::vector<int64_t>{3} &&
          !inner->p<ReduceParams>().keepdims && g_.value(inner->inputs[0]).shape.size() == 4) {
        p.x = inner->inputs[0];
        p.desc = "ReduceMean over W then H, " + p.desc;
      } else if (const ValueId flat = flattened_map(rm); flat != kNoValue) {  // x.flatten(2).mean(2)
        p.x = flat;
        p.desc = "ReduceMean over the flattened map, " + p.desc;
      } else if (const ValueId nchw = channel_last_view(rm); nchw != kNoValue) {
        // The mean over axes 1 and 2 of a channel-last [N, H, W, C] tensor that the conv reads
        // through Transpose(0, 3, 1, 2), as tf2onnx writes a gate (of |x| too).
        p.x = nchw;
        l1 = prod(rm->inputs[0], OpType::Abs) != nullptr;  // |x|: taken as a ReduceL1 / HW is
        p.desc = "ReduceMean over H and W of the channel-last tensor, " + p.desc;
      } else if (xin.shape.size() != 4 || rm->p<ReduceParams>().axes != std::vector<int64_t>{2, 3}) {
        throw Reject{"ReduceMean " + rm->name + " does not average over H and W" +
                     (over_axes_1_2(rm) ? " of an NCHW tensor (axes 1, 2 of a channel-last one that no Transpose reads "
                                          "to NCHW or comes from)"
                                        : "")};
      } else {
        p.x = rm->inputs[0];
        p.desc = "ReduceMean, " + p.desc;
      }
    } else if (const Node* sum = mean_as_sum(pooled, sum_of_abs)) {
      p.x = sum->inputs[0];
      l1 = sum_of_abs;
      p.desc = std::string(l1 ? "ReduceL1" : "ReduceSum") + " / HW, " + p.desc;
    } else if (const Node* mx = spatial_max_or_l2(pooled, p.pool)) {  // other channel-gating papers' pools
      p.x = mx->inputs[0];
      p.desc = std::string(op_name(mx->op)) + ", " + p.desc;
    } else if (const ValueId sq = root_sum_of_squares(pooled); sq != kNoValue) {  // x.norm(dim=(2, 3))
      p.x = sq;
      p.pool = GatedConvParams::Pool::L2;
      p.desc = "Sqrt of the sum of squares, " + p.desc;
    } else {
      return false;
    }
    return true;
  }

  // x [N, C, H, W] seen as [N, C, H * W] (Reshape or Flatten) and averaged over that last axis
  // by rm: x, else kNoValue.
  ValueId flattened_map(const Node* rm) const {
    const Value& xin = g_.value(rm->inputs[0]);
    const auto& axes = rm->p<ReduceParams>().axes;
    if (xin.shape.size() != 3 || axes.size() != 1 || (axes[0] != 2 && axes[0] != -1)) return kNoValue;
    const NodeId pid = xin.producer;
    if (pid < 0 || (g_.node(pid).op != OpType::Reshape && g_.node(pid).op != OpType::Flatten)) return kNoValue;
    const ValueId x = g_.node(pid).inputs[0];
    const Shape& xs = g_.value(x).shape;
    if (xs.size() != 4 || xin.shape != Shape{xs[0], xs[1], xs[2] * xs[3]}) return kNoValue;
    return x;
  }

  // v = Sqrt(ReduceSum(x * x) or ReduceSumSquare(x) over H, W): the L2 norm of each channel of
  // x (the Frobenius norm torch writes for x.norm(dim=(2, 3))). x, else kNoValue.
  ValueId root_sum_of_squares(ValueId v) const {
    const Node* sq = prod(v, OpType::Sqrt);
    if (!sq) return kNoValue;
    const Node* rs = prod(sq->inputs[0], OpType::ReduceSumSquare);
    const bool squared = rs != nullptr;
    if (!rs) rs = prod(sq->inputs[0], OpType::ReduceSum);
    if (!rs || rs->p<ReduceParams>().axes != std::vector<int64_t>{2, 3}) return kNoValue;
    ValueId x = rs->inputs[0];
    if (!squared) {
      const Node* mul = prod(x, OpType::Mul);
      const Node* pw = mul ? nullptr : prod(x, OpType::Pow);
      if (mul && mul->inputs[0] == mul->inputs[1]) {
        x = mul->inputs[0];
      } else if (pw && scalar_const(pw->inputs[1]) && floats(pw->inputs[1])[0] == 2.f) {
        x = pw->inputs[0];
      } else {
        return kNoValue;
      }
    }
    return g_.value(x).shape.size() == 4 ? x : kNoValue;
  }

  // Whether v is a per-channel constant of M values broadcast over [N, M, H, W].
  bool per_channel_constant(ValueId v, int64_t m) const {
    const Value& val = g_.value(v);
    if (!val.is_constant() || val.dtype != DType::Float32 || numel(v) != m) return false;
    const Shape& s = val.shape;
    return (s.size() == 4 && s[1] == m) || (s.size() == 3 && s[0] == m);
  }

  struct Match {
    NodeId conv = -1;
    std::vector<NodeId> fused;  // nodes whose work the gated conv takes over
    ValueId out = kNoValue;
    GatedConvParams params;
    Predictor pred;
    std::vector<float> beta;
    std::string desc;
    bool widened = false;  // the gate runs on the conv's output cast to float64 (rewrite casts after)
  };

  Match match(NodeId conv_id) {
    Match mt;
    mt.conv = conv_id;
    const Node& conv = g_.node(conv_id);
    const ValueId y = conv.outputs[0];
    const Shape& ys = g_.value(y).shape;
    const int64_t m = ys[1];
    // Group 1, or depthwise (one filter per channel: the gate picks channels of both sides).
    const int64_t groups = conv.p<ConvParams>().group, cin = g_.value(conv.inputs[0]).shape[1];
    if (groups != 1 && !(groups == cin && groups == m && g_.value(conv.inputs[1]).shape[1] == 1))
      throw Reject{"grouped convolutions other than depthwise ones are not gated by this runtime yet"};
    if (!conv.p<ConvParams>().pre_shift.empty()) throw Reject{"the conv reads a fused shift; gating it is not supported"};
    if (conv.p<ConvParams>().fused_sum || conv.p<ConvParams>().activation.kind != Activation::None)
      throw Reject{"the conv already has a fused epilogue"};
    if (!g_.value(conv.inputs[1]).is_constant() ||
        (conv.inputs.size() > 2 && conv.inputs[2] != kNoValue && !g_.value(conv.inputs[2]).is_constant()))
      throw Reject{"the conv's weights are not constant"};
    if (!single_use(g_, y)) throw Reject{"the conv's output is also used ungated elsewhere"};
    // The conv's output cast to float64 first: torch exports y * torch.where(c, 1.0, 0.0) with
    // double constants, and the mask, the product and what follows in double. For a 0/1 mask,
    // double(y) * m [-> Relu] is exactly double(the float gated conv's output): the gate runs
    // in float and its output is cast (checked below, once the selection is known).
    ValueId y_gate = y;  // the conv's output as the gate reads it
    if (const Node& c = g_.node(g_.value(y).consumers[0]);
        c.op == OpType::Cast && c.p<CastParams>().to == DType::Float64 && single_use(g_, c.outputs[0])) {
      y_gate = c.outputs[0];
      mt.widened = true;
      mt.fused.push_back(g_.value(y).consumers[0]);
    }
    // The gate after the conv's Relu, relu(conv) * pi: with pi >= 0 (every form gives 0 or
    // g = relu(...)) it is relu(conv * pi), the gated conv with a Relu epilogue and no beta.
    const NodeId first = g_.value(y_gate).consumers[0];
    const bool relu_first = g_.node(first).op == OpType::Relu;
    if (relu_first && !single_use(g_, g_.node(first).outputs[0])) {
      // E.g. a gate whose saliency pools this Relu's output (not the conv's input, as FBS does):
      // the conv must then run in full.
      std::string readers;
      for (NodeId r : g_.value(g_.node(first).outputs[0]).consumers)
        readers += (readers.empty() ? "" : ", ") + g_.node(r).name;
      throw Reject{"the Relu after the conv is also read ungated (by " + readers + "), so no channel of the conv can be skipped"};
    }
    const ValueId gated_in = relu_first ? g_.node(first).outputs[0] : y_gate;
    const NodeId mul_id = g_.value(gated_in).consumers[0];
    const Node& mul = g_.node(mul_id);
    bool mask_flip = false;
    ValueId pi4 = applied_operand(mul, gated_in, &mask_flip);
    // Where(pi > 0, y, 0): y where the selection is positive, 0 elsewhere (a hard mask); or
    // Where(mask, y, 0) of a boolean mask itself (Where(mask, 0, y): mask_flip).
    const bool where = mul.op == OpType::Where;
    const bool bool_mask = pi4 != kNoValue && g_.value(pi4).dtype == DType::Bool;
    if (pi4 == kNoValue || (where && g_.value(mul.outputs[0]).shape != g_.value(gated_in).shape))
      throw Reject{"the conv's output is not multiplied by the channel selection"};
    // pi4.expand_as(y) or pi4.repeat(1, 1, H, W): the same value at every pixel, as broadcasting.
    if (const Node* e = prod(pi4, OpType::Expand); e && g_.value(pi4).shape == ys) pi4 = e->inputs[0];
    if (const Node* t = prod(pi4, OpType::Tile); t && g_.value(pi4).shape == ys &&
                                                  const_ints(g_, *t, 1) == std::vector<int64_t>{1, 1, ys[2], ys[3]})
      pi4 = t->inputs[0];
    if (!per_sample_channel(g_.value(pi4).shape, ys))
      throw Reject{"the multiplier of " + mul.name + " is not one value per (sample, channel)"};
    const ValueId pi = through_views(pi4);
    if (g_.value(pi).shape != Shape{ys[0], m} && g_.value(pi).shape != Shape{ys[0], m, 1, 1})
      throw Reject{"the channel multiplier is not an [N, C] (or [N, C, 1, 1]) tensor"};
    Selection sel;
    if (bool_mask) {
      std::optional<Selection> th = threshold_test(pi, kNoValue, mask_flip);
      if (!th) throw Reject{"the condition of " + mul.name + " is not a test of g against its k-th largest value"};
      sel = *th;
    } else {
      sel = selection(pi, m);
    }
    // Where(pi > 0, ...) of a selection of g's values: 1 where kept and g > 0 (of a 0/1 mask: the mask).
    const bool positive = where && !sel.unit;
    if (where) sel.unit = true;
    if (mt.widened && !sel.unit)
      throw Reject{"the gate multiplies the conv's output cast to float64 by g: only a 0/1 mask gives in double "
                   "exactly what the gate computes in float"};
    if (sel.k < 0 || sel.k > m) throw Reject{"k = " + std::to_string(sel.k) + " is outside 0.." + std::to_string(m)};
    Predictor pred = predictor(sel.g, m);
    if (positive && !pred.saliency.sign_exact())
      throw Reject{std::string("Where(pi > 0, conv, 0) keeps the channels whose g > 0, and this gate's g (") +
                   saliency_act_name(pred.saliency.act) +
                   ") is 0 in ONNX Runtime where it is not here (sigmoid below about -18): the mask would differ"};
    if (relu_first && !sel.unit && !pred.saliency.nonnegative())
      throw Reject{std::string("relu(conv) * pi is relu(conv * pi) only where pi >= 0, and this gate's g (") +
                   saliency_act_name(pred.saliency.act) + ") can be negative"};
    if (pred.x != conv.inputs[0]) throw Reject{"the gate reads a different tensor than the conv's input"};
    const std::vector<NodeId> cast = mt.fused;  // the widening Cast, if any
    mt.fused = {conv_id, mul_id};
    if (relu_first) mt.fused.insert(mt.fused.begin() + 1, first);
    mt.fused.insert(mt.fused.end(), cast.begin(), cast.end());
    ValueId cur = mul.outputs[0];
    GatedConvParams gp;
    gp.conv = conv.p<ConvParams>();
    gp.form = sel.form;
    gp.threshold_by_difference = sel.by_difference;
    gp.unit_pi = sel.unit;
    gp.positive_pi = positive;
    gp.k = gp.k_exported = sel.k;
    gp.abs_saliency = pred.abs;
    gp.saliency = pred.saliency;
    gp.saliency_pool = pred.pool;
    std::vector<float> beta;
    // Optional beta, masked or not (not after a Relu: relu(conv) * pi + beta is no gated conv).
    if (!relu_first && !mt.widened && single_use(g_, cur)) {
      const Node& add = g_.node(g_.value(cur).consumers[0]);
      if (add.op == OpType::Add) {
        ValueId other = add.inputs[0] == cur ? add.inputs[1] : add.inputs[0];
        if (per_channel_constant(other, m)) {
          gp.beta = BetaMode::Unmasked;
          beta = floats(other);
        } else if (const Node* bm = prod(through_views(other), OpType::Mul);
                   bm && per_sample_channel(g_.value(other).shape, ys)) {
          // beta[None, :, None, None] * mask[:, :, None, None], or (beta * mask)[:, :, None, None]
          // (the product on [N, M], beta then [M] or [1, M]).
          // The product must be [N, M] or [N, M, 1, 1] itself, its mask operand too, so that the views
          // keep every (sample, channel) in place (one computed as [M, N, 1] and reshaped would not).
          const Shape& ps = g_.value(bm->outputs[0]).shape;
          const bool flat = ps == Shape{ys[0], m};
          for (int side = 0; side < 2 && gp.beta == BetaMode::None && (flat || per_sample_channel(ps, ys)); ++side) {
            const Shape& mask_shape = g_.value(bm->inputs[1 - side]).shape;
            if (mask_shape != ps && (flat || !per_sample_channel(mask_shape, ys))) continue;
            const ValueId bv = bm->inputs[side];
            const Shape& bs = g_.value(bv).shape;
            const bool beta_like = flat ? g_.value(bv).is_constant() && g_.value(bv).dtype == DType::Float32 &&
                                              (bs == Shape{m} || bs == Shape{1, m})
                                        : per_channel_constant(bv, m);
            if (!beta_like) continue;
            const Node* cast = prod(through_views(bm->inputs[1 - side]), OpType::Cast);
            const Node* gt = cast ? prod(cast->inputs[0], OpType::Greater) : nullptr;
            // (pi > 0 is "active" only where pi cannot be negative.)
            if (gt && through_views(gt->inputs[0]) == pi && is_zero(gt->inputs[1]) &&
                (gp.unit_pi || gp.saliency.nonnegative())) {
              gp.beta = BetaMode::Masked;
              beta = floats(bm->inputs[side]);
            }
          }
        }
        if (gp.beta != BetaMode::None) {
          mt.fused.push_back(g_.value(cur).consumers[0]);
          cur = add.outputs[0];
        }
      }
    }
    if (single_use(g_, cur) && g_.node(g_.value(cur).consumers[0]).op == OpType::Relu) {
      gp.activation.kind = Activation::Relu;
      mt.fused.push_back(g_.value(cur).consumers[0]);
      cur = g_.node(g_.value(cur).consumers[0]).outputs[0];
    }
    if (relu_first) gp.activation.kind = Activation::Relu;
    mt.out = cur;
    mt.params = gp;
    mt.pred = std::move(pred);
    mt.beta = std::move(beta);
    mt.desc = std::string(gate_form_name(gp.form)) + (gp.positive_pi ? " (0/1 mask where g > 0)" : gp.unit_pi ? " (0/1 mask)" : "") + " k=" + std::to_string(gp.k) + "/" + std::to_string(m) + ", " +
              mt.pred.desc + (gp.saliency.act != Saliency::Act::Relu ? std::string(", ") + saliency_act_name(gp.saliency.act) + " g" : "") + ", " +
              beta_mode_name(gp.beta) +
              (gp.activation.kind == Activation::Relu ? ", relu" : ", no activation");
    return mt;
  }

  // The other operands of the Muls that read the conv's output (or its Relu).
  // (Also through a Cast to float64 first: match takes a 0/1 mask there.)
  std::vector<ValueId> mul_operands(NodeId conv_id) const {
    ValueId y = g_.node(conv_id).outputs[0];
    if (single_use(g_, y)) {
      const Node& c = g_.node(g_.value(y).consumers[0]);
      if (c.op == OpType::Cast && c.p<CastParams>().to == DType::Float64) y = c.outputs[0];
    }
    std::vector<ValueId> others;
    for (NodeId c : g_.value(y).consumers) {
      const Node& n = g_.node(c);
      if (n.dead) continue;
      if (const ValueId v = applied_operand(n, y); v != kNoValue) others.push_back(v);
      if (n.op == OpType::Relu)
        for (NodeId c2 : g_.value(n.outputs[0]).consumers)
          if (const ValueId v = applied_operand(g_.node(c2), n.outputs[0]); v != kNoValue) others.push_back(v);
    }
    return others;
  }

  // The nearest TopK up v's producers (within 64 values), or -1. Breadth first, nearest
  // producers first: depth first, Where(cond, g, 0) went up g's branch (the predictor, the conv
  // input and everything before it) and spent the budget before reaching the TopK behind cond,
  // so every gate but the first was missed.
  NodeId nearest_topk(ValueId start) const {
    std::deque<ValueId> queue{start};
    std::set<ValueId> seen;
    while (!queue.empty() && seen.size() < 64) {
      ValueId v = queue.front();
      queue.pop_front();
      if (v == kNoValue || !seen.insert(v).second) continue;
      NodeId p = g_.value(v).producer;
      if (p < 0) continue;
      if (g_.node(p).op == OpType::TopK) return p;
      for (ValueId in : g_.node(p).inputs) queue.push_back(in);
    }
    return -1;
  }

  // Whether the conv's output is multiplied by something a TopK decides.
  bool is_candidate(NodeId conv_id) const {
    if (g_.value(g_.node(conv_id).outputs[0]).shape.size() != 4) return false;
    for (ValueId v : mul_operands(conv_id))
      if (nearest_topk(v) >= 0) return true;
    return false;
  }

  // The TopK whose choice multiplies the conv's output: the nearest one up the mask's producers,
  // not every TopK a walk could reach: up the saliency g it goes through the predictor to the
  // conv's input and the layers before, and another gate's TopK there is not this gate's.
  std::vector<NodeId> topks_of(NodeId conv_id) const {
    std::vector<NodeId> found;
    for (ValueId v : mul_operands(conv_id))
      if (const NodeId t = nearest_topk(v); t >= 0) found.push_back(t);
    return found;
  }

  ValueId add_constant(const std::string& name, Shape shape, const std::vector<float>& data) {
    Value v;
    v.name = name;
    v.dtype = DType::Float32;
    v.shape = shape;
    v.shape_known = true;
    v.constant = Tensor::copy_of(DType::Float32, std::move(shape), data.data());
    return g_.add_value(std::move(v));
  }

  void rewrite(Match& mt, float density) {
    const Node conv = g_.node(mt.conv);
    const int64_t m = g_.value(conv.outputs[0]).shape[1], c = g_.value(conv.inputs[0]).shape[1];
    if (density > 0.f) {
      const int64_t target = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(density * static_cast<double>(m) - 1e-9)), 1, m);
      if (mt.params.form == GateForm::Threshold) mt.params.k = std::min(mt.params.k, target + 1);  // keeps K-1
      else mt.params.k = std::min(mt.params.k, target);
    }
    Node n;
    n.op = OpType::SluiceGatedConv;
    n.name = conv.name;
    ValueId wg = add_constant(conv.name + "__gate_w", {m, c}, mt.pred.wg);
    ValueId bg = add_constant(conv.name + "__gate_b", {m}, mt.pred.bg);
    ValueId beta = mt.beta.empty() ? kNoValue : add_constant(conv.name + "__beta", {m}, mt.beta);
    n.inputs = {conv.inputs[0], conv.inputs[1], conv.inputs.size() > 2 ? conv.inputs[2] : kNoValue, wg, bg, beta};
    n.outputs = {mt.out};
    n.params = mt.params;
    for (NodeId f : mt.fused) g_.node(f).dead = true;
    if (mt.widened) {  // the float output, then the Cast to the double value the graph had
      Value v = g_.value(conv.outputs[0]);
      v.name = g_.value(mt.out).name + "_float";
      v.shape = g_.value(mt.out).shape;
      v.consumers.clear();
      v.is_output = v.is_input = false;
      const ValueId f = g_.add_value(std::move(v));
      Node cast;
      cast.op = OpType::Cast;
      cast.name = conv.name + "_to_double";
      cast.inputs = {f};
      cast.outputs = {mt.out};
      cast.params = CastParams{DType::Float64};
      n.outputs = {f};
      g_.add_node(std::move(n));
      g_.add_node(std::move(cast));
      return;
    }
    g_.add_node(std::move(n));
  }

 private:
  Graph& g_;
};

}  // namespace

int recognise_gates(Graph& g, float density, bool gating) {
  g.rebuild_links();
  g.gates.clear();
  GateMatcher matcher(g);
  int found = 0;
  // Gates whose k a density override lowered, with the TopK nodes that chose at the file's k.
  struct Lowered {
    std::string conv;
    int64_t file_k, k;
    std::vector<NodeId> topks;
  };
  std::vector<Lowered> lowered;
  for (NodeId id : g.topological_order()) {
    if (g.node(id).dead || g.node(id).op != OpType::Conv || !matcher.is_candidate(id)) continue;
    GateReport r;
    r.conv = g.node(id).name;
    try {
      auto mt = matcher.match(id);
      mt.params.gating = gating;
      r.recognised = true;
      r.form = mt.desc;
      const int64_t file_k = mt.params.k;
      std::vector<NodeId> topks = density > 0.f ? matcher.topks_of(id) : std::vector<NodeId>{};
      matcher.rewrite(mt, density);
      if (mt.params.k < file_k) lowered.push_back({r.conv, file_k, mt.params.k, std::move(topks)});
      g.rebuild_links();
      ++found;
    } catch (const Reject& e) {
      r.reason = e.why;
    }
    g.gates.push_back(std::move(r));
  }
  // A channel selection ([N, C, 1, 1], decided by a TopK) that multiplies a map no conv wrote
  // (a gate after a residual Add, a pool or a concat): listed, so that inspect says why it runs
  // as the generic ops (it had no line at all).
  for (NodeId id : g.topological_order()) {
    const Node& n = g.node(id);
    if (n.dead || n.op != OpType::Mul || n.inputs.size() != 2) continue;
    for (int side = 0; side < 2; ++side) {
      const ValueId x = n.inputs[static_cast<size_t>(side)], sel = n.inputs[static_cast<size_t>(1 - side)];
      const Shape &xs = g.value(x).shape, &ss = g.value(sel).shape;
      if (xs.size() != 4 || ss.size() != 4 || ss[2] != 1 || ss[3] != 1 || xs[2] * xs[3] <= 1 || ss[1] != xs[1] ||
          ss[1] <= 1)
        continue;
      NodeId p = g.value(x).producer;
      if (p >= 0 && g.node(p).op == OpType::Relu) p = g.value(g.node(p).inputs[0]).producer;
      if (p >= 0 && (g.node(p).op == OpType::Conv || g.node(p).op == OpType::SluiceGatedConv)) continue;  // above
      if (matcher.nearest_topk(sel) < 0) continue;
      GateReport r;
      r.conv = p >= 0 ? g.node(p).name : g.value(x).name;
      r.reason = "a top-k channel selection ('" + n.name + "') multiplies the output of " +
                 (p >= 0 ? std::string(op_name(g.node(p).op)) + " '" + g.node(p).name + "'" : "input '" + g.value(x).name + "'") +
                 ", not a conv's: only a conv's output channels can be skipped, so it runs as the generic ops";
      g.gates.push_back(std::move(r));
      break;
    }
  }
  g.remove_dead_nodes();
  // A lowered gate whose TopK the model still needs elsewhere (its mask added to the output
  // outside the gate, the saliency or mask a graph output): that part would keep the file's k
  // while the gated conv keeps fewer, and the outputs would mix the two. Refused.
  if (!lowered.empty()) {
    std::vector<bool> needed(g.nodes.size(), false);
    std::vector<ValueId> stack(g.outputs.begin(), g.outputs.end());
    std::set<ValueId> seen;
    while (!stack.empty()) {
      const ValueId v = stack.back();
      stack.pop_back();
      if (v == kNoValue || !seen.insert(v).second) continue;
      const NodeId p = g.value(v).producer;
      if (p < 0 || g.node(p).dead) continue;
      needed[static_cast<size_t>(p)] = true;
      for (ValueId in : g.node(p).inputs) stack.push_back(in);
    }
    for (const Lowered& l : lowered)
      for (NodeId t : l.topks)
        if (needed[static_cast<size_t>(t)])
          throw Error(g.model_name + ": --density lowers the gate of conv '" + l.conv + "' from k=" +
                      std::to_string(l.file_k) + " to k=" + std::to_string(l.k) + ", but its top-k '" + g.node(t).name +
                      "' is also used outside the gated conv (a graph output, or a mask added or multiplied "
                      "elsewhere), which would still take k=" + std::to_string(l.file_k) +
                      " and mix the two in the outputs; run without a density override, or export the model with "
                      "the smaller k");
  }
  return found;
}

}  // namespace sluice::graph::passes
