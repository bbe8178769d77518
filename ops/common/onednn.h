// Shared oneDNN plumbing: one CPU engine, a stream per calling thread, epilogues.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include "graph/params.h"

namespace sluice::ops::onednn {

dnnl::engine& engine();
dnnl::stream& thread_stream();  // one per thread: concurrent runs never share a stream

// Appends the fused activation (and a sum before it when `sum`) as post-ops.
dnnl::post_ops make_post_ops(const graph::FusedActivation& act, bool sum);

// Packs a plain f32 buffer of descriptor `from` into a memory of descriptor `to`, once.
dnnl::memory pack(const dnnl::memory::desc& from, const void* data, const dnnl::memory::desc& to);

// Executes `prim` with `args` plus a user scratchpad at `scratch`.
void execute(const dnnl::primitive& prim, std::unordered_map<int, dnnl::memory> args,
             const dnnl::memory::desc& scratch_md, void* scratch);

}  // namespace sluice::ops::onednn
