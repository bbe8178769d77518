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

void execute(const dnnl::primitive& prim, std::unordered_map<int, dnnl::memory> args,
             const dnnl::memory::desc& scratch_md, void* scratch) {
  if (scratch_md.get_size() > 0) args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_md, engine(), scratch));
  dnnl::stream& s = thread_stream();
  prim.execute(s, args);
  s.wait();
}

}  // namespace sluice::ops::onednn
