// Shared oneDNN plumbing: one CPU engine, a stream per calling thread, epilogues.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "graph/params.h"

namespace sluice::ops::onednn {

dnnl::engine& engine();
dnnl::stream& thread_stream();  // one per thread: concurrent runs never share a stream

// Appends the fused activation (and a sum before it when `sum`) as post-ops.
dnnl::post_ops make_post_ops(const graph::FusedActivation& act, bool sum);

// Packs a plain f32 buffer of descriptor `from` into a memory of descriptor `to`, once.
dnnl::memory pack(const dnnl::memory::desc& from, const void* data, const dnnl::memory::desc& to);

// Where a blocked memory format puts each element, one dimension at a time: the offset (in
// elements) of logical index (i0, i1, ...) is offset0 + along[0][i0] + along[1][i1] + ...,
// for every index up to the padded dims (a format's blocks pad a dim to their multiple; those
// elements must hold zeros). Lets a kernel write straight into the layout a primitive chose,
// instead of writing a plain tensor and running a reorder over it. Empty `along` when the
// format is not a plain blocked one (Winograd, RNN-packed, extra compensation data).
struct BlockedOffsets {
  int64_t offset0 = 0;
  std::vector<std::vector<int64_t>> along;
  bool ok() const { return !along.empty(); }
};
BlockedOffsets blocked_offsets(const dnnl::memory::desc& md);

// Whether a conv whose NHWC primitive is `impl` (impl_info_str) and that runs `macs` MACs per
// inference is worth timing on oneDNN's blocked activation layout, with reorders in and out:
// not brgemm convs (NHWC-native: AVX-512 machines), and not convs below 16M MACs, where two
// reorders weigh as much as the conv and the timing would only lengthen session creation.
// On AVX2, oneDNN's NHWC convs are jit:avx2, written for nChw8c: VGG-16's 3x3 layers ran at
// 32-50 GFLOP/s NHWC against 55-62 blocked (sluice_bench_conv, 1 thread, Zen3).
bool blocked_form_may_pay(const std::string& impl, int64_t macs);

// Executes `prim` with `args` plus a user scratchpad at `scratch`.
void execute(const dnnl::primitive& prim, std::unordered_map<int, dnnl::memory> args,
             const dnnl::memory::desc& scratch_md, void* scratch);

// The common forward call: src and dst at the given pointers, packed weights, and the bias
// when it is a non-empty memory.
void execute_forward(const dnnl::primitive& prim, const dnnl::memory::desc& src_md, const void* src,
                     const dnnl::memory& weights, const dnnl::memory& bias, const dnnl::memory::desc& dst_md, void* dst,
                     const dnnl::memory::desc& scratch_md, void* scratch);

}  // namespace sluice::ops::onednn
