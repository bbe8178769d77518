#include "ops/common/onednn.h"

namespace sluice::ops::onednn {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& thread_stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::post_ops make_post_ops(const graph::FusedActivation& act, bool sum) {
  using dnnl::algorithm;
  dnnl::post_ops po;
  if (sum) po.append_sum(1.f);
  switch (act.kind) {
    case graph::Activation::None: break;
    case graph::Activation::Relu: po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f); break;
    case graph::Activation::LeakyRelu: po.append_eltwise(1.f, algorithm::eltwise_relu, act.alpha, 0.f); break;
    case graph::Activation::Clip: po.append_eltwise(1.f, algorithm::eltwise_clip_v2, act.alpha, act.beta); break;
    case graph::Activation::Sigmoid: po.append_eltwise(1.f, algorithm::eltwise_logistic, 0.f, 0.f); break;
    case graph::Activation::HardSwish: po.append_eltwise(1.f, algorithm::eltwise_hardswish, 0.f, 0.f); break;
    case graph::Activation::Swish: po.append_eltwise(1.f, algorithm::eltwise_swish, 1.f, 0.f); break;
  }
  return po;
}

dnnl::memory pack(const dnnl::memory::desc& from, const void* data, const dnnl::memory::desc& to) {
  dnnl::memory src(from, engine(), const_cast<void*>(data));
  dnnl::memory dst(to, engine());
  dnnl::stream s(engine());
  dnnl::reorder(src, dst).execute(s, src, dst);
  s.wait();
  return dst;
}

BlockedOffsets blocked_offsets(const dnnl::memory::desc& md) {
  BlockedOffsets r;
  const dnnl_memory_desc_t& d = md.data;
  if (d.format_kind != dnnl_blocked || d.extra.flags != dnnl_memory_extra_flag_none || d.ndims <= 0) return r;
  for (int dim = 0; dim < d.ndims; ++dim)
    if (d.padded_offsets[dim] != 0 || d.padded_dims[dim] < d.dims[dim]) return r;
  const dnnl_blocking_desc_t& b = d.format_desc.blocking;
  // Per dim: the product of its inner blocks (the outer index is i / that); per inner block:
  // its stride (the product of the blocks inside it) and the divisor giving its digit of i.
  std::vector<int64_t> block_of(static_cast<size_t>(d.ndims), 1), inner_stride(static_cast<size_t>(b.inner_nblks)),
      digit_div(static_cast<size_t>(b.inner_nblks));
  int64_t stride = 1;
  for (int k = b.inner_nblks - 1; k >= 0; --k) {
    const int dim = b.inner_idxs[k];
    if (dim < 0 || dim >= d.ndims || b.inner_blks[k] <= 0) return r;
    inner_stride[static_cast<size_t>(k)] = stride;
    digit_div[static_cast<size_t>(k)] = block_of[static_cast<size_t>(dim)];
    block_of[static_cast<size_t>(dim)] *= b.inner_blks[k];
    stride *= b.inner_blks[k];
  }
  r.offset0 = d.offset0;
  r.along.resize(static_cast<size_t>(d.ndims));
  for (int dim = 0; dim < d.ndims; ++dim) {
    auto& a = r.along[static_cast<size_t>(dim)];
    a.resize(static_cast<size_t>(d.padded_dims[dim]));
    for (int64_t i = 0; i < d.padded_dims[dim]; ++i) {
      int64_t off = i / block_of[static_cast<size_t>(dim)] * b.strides[dim];
      for (int k = 0; k < b.inner_nblks; ++k)
        if (b.inner_idxs[k] == dim)
          off += i / digit_div[static_cast<size_t>(k)] % b.inner_blks[k] * inner_stride[static_cast<size_t>(k)];
      a[static_cast<size_t>(i)] = off;
    }
  }
  return r;
}

bool blocked_form_may_pay(const std::string& impl, int64_t macs) {
  return macs >= (int64_t{16} << 20) && impl.find("brg") == std::string::npos;
}

void execute(const dnnl::primitive& prim, std::unordered_map<int, dnnl::memory> args,
             const dnnl::memory::desc& scratch_md, void* scratch) {
  if (scratch_md.get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_md, engine(), scratch));
  dnnl::stream& s = thread_stream();
  prim.execute(s, args);
  s.wait();
}

void execute_forward(const dnnl::primitive& prim, const dnnl::memory::desc& src_md, const void* src,
                     const dnnl::memory& weights, const dnnl::memory& bias, const dnnl::memory::desc& dst_md, void* dst,
                     const dnnl::memory::desc& scratch_md, void* scratch) {
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, dnnl::memory(src_md, engine(), const_cast<void*>(src))},
                                             {DNNL_ARG_WEIGHTS, weights},
                                             {DNNL_ARG_DST, dnnl::memory(dst_md, engine(), dst)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, bias);
  execute(prim, std::move(args), scratch_md, scratch);
}

}  // namespace sluice::ops::onednn
