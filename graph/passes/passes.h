// Graph rewrites. Each pass is small, named, and tested on structure and numbers
// (tests/unit/test_passes.cpp). They run in the order of runtime/plan.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace sluice::graph::passes {

// Gives every graph input its concrete shape for this plan. Fails naming the
// input on a dtype or rank mismatch or a dim that contradicts the model.
// `values` gives the contents of inputs the plan is specialised on (small integer
// inputs such as Reshape's shape or TopK's K fed at run time): they become constants.
void bind_input_shapes(Graph& g, const std::map<std::string, Shape>& shapes,
                       const std::map<std::string, Tensor>& values = {});

// Runs node n's reference kernel on `inputs` (one per node input, nullptr where absent) and
// returns its outputs (an empty Tensor where an output is absent), shaped as the graph says.
std::vector<Tensor> run_reference(const Graph& g, const Node& n, const std::vector<const Tensor*>& inputs);

// 1-D Conv, MaxPool and AveragePool ([N, C, L] activations) -> their 2-D form on [N, C, 1, L]
// between an Unsqueeze and a Squeeze of axis 2. Runs before shape inference (it reads only the
// nodes' own attributes and weights). Returns the number of nodes lifted.
// From node `first` on (fold_constants lifts an If's branch as it splices it in).
int lift_1d(Graph& g, size_t first = 0);
// Moves each Squeeze of axis 2 (4-D -> 3-D) down past the ops that compute the same on the 4-D
// value (elementwise ops with constant operands of rank <= 3, BatchNormalization, global pools,
// channel Concat, Flatten), and drops it where it meets an Unsqueeze of axis 2: lifted 1-D
// layers then chain in 2-D and fold, fuse and prune as such. Returns the number of moves.
int sink_squeezes(Graph& g);

// Infers every value's dtype and shape in topological order and folds nodes
// whose inputs are all constant (and Shape nodes, whose input shape is known)
// into constants. PyTorch's Shape/Gather/Concat/ConstantOfShape chains vanish here.
// Returns the number of nodes folded.
int fold_constants(Graph& g);

// Identity and inference-mode Dropout forward their input, and so do Slices over the whole
// extent, Reshape/Expand to the same shape and Cast to the same dtype. Returns nodes removed.
int eliminate_identities(Graph& g);

// Shift layers (design.md §8) in either export form (a conv with one weight of 1 per output
// channel, depthwise or not, dilated or not; Concat of Pad/Slice/Split translations of one
// tensor) -> SluiceShift; a shift read only by a 1x1 conv
// is fused into it (ConvParams::pre_shift). Runs before BN folding, which would scale the
// one-hot kernels. Returns the number of shifts found.
int recognise_shifts(Graph& g);

// Folds an inference BatchNormalization into the Conv that feeds it (the conv's
// only consumer), rewriting the conv's weight and bias. Returns BNs folded.
int fold_batch_norm(Graph& g);
// Constant per-channel Mul behind a Conv (through a Relu if no scale is negative) folded into
// the conv's filters and bias: a multiplied-in pruning mask becomes zero filters. Also a
// constant per-channel Add or Sub right behind a Conv, into its bias (BN lowered to Mul + Add).
int fold_channel_scales(Graph& g);

// FBS gates (design.md §3) -> SluiceGatedConv nodes; fills Graph::gates with what was
// and was not recognised, and why. density > 0 lowers each gate's k to ceil(density * C_out)
// (never raises it); gating = false makes the gated convs compute every channel.
int recognise_gates(Graph& g, float density = 0.f, bool gating = true);

// Conv + Add(same-shape operand) -> Conv with a fused sum (oneDNN sum post-op).
int fuse_residual_add(Graph& g);

// A Linear layer written as MatMul(A [M, K], constant B [K, N]) [+ Add(constant bias [N] or
// [1, N])] -> Gemm(A, B[, bias]): the same sums, and the form the Gemm kernels, the epilogue
// fusion and static pruning take. Returns the number rewritten.
int linear_as_gemm(Graph& g);
// Gemm with alpha != 1, beta != 1 or transA (hand-written files, other exporters) -> the form
// the fast kernels and static pruning take: alpha into the constant B, beta into the constant
// C (or C dropped when beta is 0), A through a Transpose node (which folds with a Transpose of
// A already in the model: run before eliminate_identities). Returns the number rewritten.
int normalise_gemms(Graph& g);

// Conv/Gemm + Relu/LeakyRelu/Clip(constant bounds)/HardSwish -> fused epilogue.
int fuse_activations(Graph& g);

// Static channel pruning (design.md §6): an output channel of a Conv whose filter is all
// zero is the constant act(bias). It is removed, with the matching input channel of every
// reader, when every reader is a group-1 Conv (directly, through Relu/MaxPool, or behind a
// channel Concat) or a GlobalAveragePool -> Flatten -> Gemm head; a constant != 0 is folded
// into the readers' biases, only where a reader has no zero padding over it. Residual streams
// (values tied by fused residual sums) are pruned as one dependency group: a channel goes only
// if it is zero in every conv writing into the stream. Anything else keeps the channel, with
// the reason in Graph::pruning; returns the number of channels removed.
int prune_channels(Graph& g);

// A group-1 Conv whose input comes from a gated conv (directly or through ops that keep a zero
// channel zero) -> SluiceGatedConv with GateForm::All: it reads the gate's per-sample channel
// activity and computes from the active input channels only (design.md §4). Not where every
// channel stays active (density 1, an unmasked beta whose suppressed values are all non-zero),
// nor on weights sparse enough for the sparse kernel where that may run (sparse_kernel: not
// `--sparse off`). Runs after prune_channels. Returns the number rewritten.
int read_gated_inputs(Graph& g, bool sparse_kernel = true);

// Removes nodes none of whose outputs reach a graph output. Returns nodes removed.
int remove_dead_nodes(Graph& g);

// Chooses NHWC execution for convolutions and the layout-agnostic ops around them,
// inserting SluiceReorder nodes only where a consumer needs the other layout, and
// pre-transposing constants. Returns the number of reorders inserted.
int assign_layouts(Graph& g);

// Once kernels are chosen: an NHWC value that a conv on the direct planar kernel writes and that
// only such convs (as their input, or as their fused residual) and max pools read stays in
// resident planes (Layout::Planar; a max pool then runs on them, writing planes or NHWC as its
// output is kept or not): no NHWC copy is written and packed again (for
// channel counts like 20 or 39 those copies were 20-25% of each conv). `direct` says which
// convs may run on that kernel. `takes_planes` (if given) names other convs whose kernels
// (the sparse ones) read and write planes as the direct kernel does, with no shape condition.
// Starts afresh each call (the plan calls it again with fewer convs). Returns the number of
// values kept planar; their nodes' kernels must be made again.
int keep_planes_resident(Graph& g, const std::function<bool(NodeId)>& direct,
                         const std::function<bool(NodeId)>& takes_planes = {});

// Lifetimes and arena offsets for one plan (see memory_plan.h).
}  // namespace sluice::graph::passes
