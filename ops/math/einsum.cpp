// Einsum (opset 12): explicit ("ij,jk->ik") and implicit ("ij,jk": the letters seen once, in
// alphabetical order) equations over any number of float operands, repeated letters in one term
// (a diagonal) included, and an ellipsis ("...": letters of its own, right-aligned, broadcast
// where an operand has 1, first in an implicit output, as numpy). The reference kernel walks every
// combination of the letters, summing in double over those the output drops. Predictor-sized
// einsums (a gate's 'nc,cd->nd', 'nchw,nc->nchw') are what models put here; a product of letter
// sizes past 2^34 is refused at load rather than left to run for minutes.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>

#include "ops/op_registry.h"
#include "ops/util.h"

namespace sluice::ops {

namespace {

// The letters of the equation and each one's size; the combinations that one walk visits.
struct Letters {
  std::string all;             // every distinct letter: the output's first, then the summed ones
  std::vector<int64_t> size;   // per letter of `all`
};

}  // namespace

void infer_Einsum(InferContext& ctx) {
  auto& p = ctx.node().p<graph::EinsumParams>();
  std::string eq;
  for (char c : p.equation)
    if (!std::isspace(static_cast<unsigned char>(c))) eq += c;
  const size_t arrow = eq.find("->");
  const std::string lhs = eq.substr(0, arrow);
  p.terms.clear();
  for (size_t start = 0;;) {
    const size_t comma = lhs.find(',', start);
    p.terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (p.terms.size() != ctx.num_inputs())
    ctx.fail("equation '" + p.equation + "' has " + std::to_string(p.terms.size()) + " operand term(s), the node " +
             std::to_string(ctx.num_inputs()) + " input(s)");
  // An ellipsis: the dimensions its term leaves to it, as letters the equation does not use,
  // right-aligned over the operands (numpy's broadcasting).
  std::string explicit_out = arrow == std::string::npos ? std::string() : eq.substr(arrow + 2);
  auto one_ellipsis = [&](const std::string& t) {
    const size_t at = t.find("...");
    if (t.find('.') != (at == std::string::npos ? std::string::npos : at) ||
        (at != std::string::npos && t.find('.', at + 3) != std::string::npos))
      ctx.fail("equation '" + p.equation + "': '" + t + "' has a '.' that is not one ellipsis ('...')");
    return at;
  };
  size_t ell = 0;  // dimensions the ellipsis covers, the most over the terms
  for (size_t i = 0; i < p.terms.size(); ++i)
    if (one_ellipsis(p.terms[i]) != std::string::npos) {
      const size_t rank = ctx.in(i).shape.size(), letters = p.terms[i].size() - 3;
      if (rank < letters)
        ctx.fail("equation '" + p.equation + "': term '" + p.terms[i] + "' has " + std::to_string(letters) +
                 " letter(s) besides its ellipsis for input " + std::to_string(i) + " ('" + ctx.in(i).name +
                 "') of shape " + shape_str(ctx.in(i).shape));
      ell = std::max(ell, rank - letters);
    }
  p.broadcast.clear();
  for (char c = 'A'; p.broadcast.size() < ell && c <= 'z'; ++c)
    if (std::isalpha(static_cast<unsigned char>(c)) && eq.find(c) == std::string::npos) p.broadcast += c;
  if (p.broadcast.size() < ell) ctx.fail("equation '" + p.equation + "': no letters left for its ellipsis");
  for (size_t i = 0; i < p.terms.size(); ++i)
    if (const size_t at = p.terms[i].find("..."); at != std::string::npos) {
      const size_t e = ctx.in(i).shape.size() - (p.terms[i].size() - 3);
      p.terms[i].replace(at, 3, p.broadcast.substr(ell - e));
    }
  if (one_ellipsis(explicit_out) != std::string::npos) {
    explicit_out.replace(explicit_out.find("..."), 3, p.broadcast);
  } else if (arrow != std::string::npos && ell > 0) {  // (numpy and ONNX Runtime refuse it too)
    ctx.fail("equation '" + p.equation + "': the inputs' ellipsis stands for " + std::to_string(ell) +
             " axis/axes, and the output has no '...' for them");
  }
  std::map<char, int64_t> size, count;
  DType dt = DType::Undefined;
  for (size_t i = 0; i < p.terms.size(); ++i) {
    const graph::Value& v = ctx.in(i);
    if (v.dtype != DType::Float32 && v.dtype != DType::Float64)
      ctx.fail("input " + std::to_string(i) + " ('" + v.name + "') is " + dtype_name(v.dtype) +
               ": Einsum runs on float32 and float64");
    if (dt != DType::Undefined && v.dtype != dt) ctx.fail("the inputs mix " + std::string(dtype_name(dt)) + " and " + dtype_name(v.dtype));
    dt = v.dtype;
    const std::string& t = p.terms[i];
    if (t.size() != v.shape.size())
      ctx.fail("equation '" + p.equation + "': term '" + t + "' has " + std::to_string(t.size()) + " letter(s) for input " +
               std::to_string(i) + " ('" + v.name + "') of shape " + shape_str(v.shape));
    for (size_t d = 0; d < t.size(); ++d) {
      const char c = t[d];
      if (!std::isalpha(static_cast<unsigned char>(c)))
        ctx.fail("equation '" + p.equation + "': '" + std::string(1, c) + "' is not a letter");
      ++count[c];
      const int64_t n = v.shape[d];
      auto [it, fresh] = size.emplace(c, n);
      const bool broadcast = p.broadcast.find(c) != std::string::npos;
      if (broadcast && !fresh && (n == 1 || it->second == 1)) {  // (an ellipsis axis of 1 broadcasts)
        if (it->second == 1) it->second = n;  // (against 0 too: the result is empty)
        continue;
      }
      if (!fresh && n >= 0 && it->second >= 0 && it->second != n)
        ctx.fail("equation '" + p.equation + "': letter '" + std::string(1, c) + "' is " + std::to_string(it->second) +
                 " in one place and " + std::to_string(n) + " in input " + std::to_string(i) + " ('" + v.name + "')");
      if (it->second < 0) it->second = n;
    }
  }
  if (arrow != std::string::npos) {
    p.output = explicit_out;
    for (size_t d = 0; d < p.output.size(); ++d) {
      const char c = p.output[d];
      if (!size.count(c))
        ctx.fail("equation '" + p.equation + "': output letter '" + std::string(1, c) + "' is in no input term");
      if (p.output.find(c) != d) ctx.fail("equation '" + p.equation + "': output letter '" + std::string(1, c) + "' repeats");
    }
  } else {
    p.output = p.broadcast;  // (the ellipsis's axes first, as numpy)
    for (const auto& [c, n] : count)  // (std::map: alphabetical, upper case first, as numpy)
      if (n == 1 && p.broadcast.find(c) == std::string::npos) p.output += c;
  }
  Shape out;
  double work = 1;
  for (char c : p.output) out.push_back(size[c]);
  for (const auto& [c, n] : size) work *= static_cast<double>(std::max<int64_t>(n, 1));
  if (work > static_cast<double>(int64_t{1} << 34)) {
    char walks[32];
    std::snprintf(walks, sizeof walks, "%.3g", work);
    ctx.fail("equation '" + p.equation + "' over these shapes walks " + walks +
             " combinations of its letters, more than 2^34 (the reference Einsum's bound): write it as MatMul");
  }
  checked_numel(ctx, out);
  ctx.set_output(0, dt, out);
}

void reference_Einsum(const graph::Node& node, std::span<const TensorView> in, std::span<TensorView> out) {
  const auto& p = node.p<graph::EinsumParams>();
  Letters l;
  l.all = p.output;
  for (const std::string& t : p.terms)
    for (char c : t)
      if (l.all.find(c) == std::string::npos) l.all += c;
  l.size.assign(l.all.size(), -1);
  for (size_t i = 0; i < p.terms.size(); ++i)
    for (size_t d = 0; d < p.terms[i].size(); ++d) {
      int64_t& n = l.size[l.all.find(p.terms[i][d])];
      if (n < 0 || n == 1) n = in[i].shape[d];  // (an ellipsis axis of 1 broadcasts against the others)
    }
  // stride[i][letter]: how far operand i's offset moves per step of the letter (summed over the
  // letter's places in the term: a repeated letter walks the diagonal).
  std::vector<std::vector<int64_t>> stride(in.size(), std::vector<int64_t>(l.all.size(), 0));
  for (size_t i = 0; i < in.size(); ++i) {
    int64_t s = 1;
    for (size_t d = p.terms[i].size(); d-- > 0;) {
      const size_t k = l.all.find(p.terms[i][d]);
      if (in[i].shape[d] != 1 || l.size[k] == 1) stride[i][k] += s;  // (a broadcast axis of 1 stays put)
      s *= in[i].shape[d];
    }
  }
  const size_t n_out = p.output.size(), n_all = l.all.size();
  int64_t outer = 1, inner = 1;
  for (size_t k = 0; k < n_all; ++k) (k < n_out ? outer : inner) *= l.size[k];
  const bool f64 = out[0].dtype == DType::Float64;
  auto value = [&](size_t i, int64_t off) {
    return f64 ? in[i].as<const double>()[off] : static_cast<double>(in[i].as<const float>()[off]);
  };
  std::vector<int64_t> idx(n_all, 0), off(in.size(), 0);
  for (int64_t o = 0; o < outer; ++o) {
    // idx[0..n_out) is output element o (row-major); the summed letters restart at 0.
    for (size_t k = n_out; k < n_all; ++k) idx[k] = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      off[i] = 0;
      for (size_t k = 0; k < n_out; ++k) off[i] += idx[k] * stride[i][k];
    }
    double acc = 0;
    for (int64_t s = 0; s < inner; ++s) {
      double prod = 1;
      for (size_t i = 0; i < in.size(); ++i) prod *= value(i, off[i]);
      acc += prod;
      for (size_t k = n_all; k-- > n_out;) {  // the next combination of the summed letters
        for (size_t i = 0; i < in.size(); ++i) off[i] += stride[i][k];
        if (++idx[k] < l.size[k]) break;
        for (size_t i = 0; i < in.size(); ++i) off[i] -= idx[k] * stride[i][k];
        idx[k] = 0;
      }
    }
    if (f64) out[0].as<double>()[o] = acc;
    else out[0].as<float>()[o] = static_cast<float>(acc);
    for (size_t k = n_out; k-- > 0;) {  // the next output element
      if (++idx[k] < l.size[k]) break;
      idx[k] = 0;
    }
  }
}

}  // namespace sluice::ops
