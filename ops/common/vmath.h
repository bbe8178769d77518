// Vector exp, sigmoid, tanh and erf on simd::vf, for the elementwise kernels (one call of the libm
// function per element cost 4-5 ns: EfficientNet's sigmoids and ConvNeXt's GELU erfs took
// 25-40 ms a run). Textbook methods, no tables:
// - exp: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two for exactness), e^r by its Taylor
//   series to r^7 (truncation < 1e-8 relative), 2^n built in the exponent bits; x clamped to
//   [-87.3365, 88.7228] (e^x from the smallest normal float to the largest: n in [-126, 128],
//   2^128 built as 2^127 times 2).
// - erf: the Maclaurin series to x^13 for |x| < 0.5 (relative error < 1e-7); beyond, Abramowitz
//   and Stegun 7.1.26, 1 - t (a1 + t (a2 + ...)) e^(-x^2) with t = 1 / (1 + p |x|) (absolute
//   error < 1.5e-7, < 3e-7 in float), odd in x.
// NaN in, NaN out.
#pragma once

#include "ops/common/simd.h"

namespace sluice::ops::simd {

typedef int32_t vi __attribute__((vector_size(kLanes * sizeof(int32_t)), aligned(4)));

inline vf splat(float v) { return vf{} + v; }
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }

inline vf exp(vf x) {
  const vf xc = vmin(vmax(x, splat(-87.3365479f)), splat(88.7228394f));  // n stays in [-126, 128]
  // n = round(x / ln2): adding and taking away 1.5 * 2^23 rounds to nearest.
  const vf magic = splat(12582912.f);
  const vf n = (xc * splat(1.44269504f) + magic) - magic;
  const vf r = (xc - n * splat(0.693145752f)) - n * splat(1.42860677e-6f);  // ln2 = 0.693145752 + 1.42860677e-6
  vf p = splat(1.f / 5040.f);
  p = p * r + splat(1.f / 720.f);
  p = p * r + splat(1.f / 120.f);
  p = p * r + splat(1.f / 24.f);
  p = p * r + splat(1.f / 6.f);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.f);
  p = p * r + splat(1.f);
  const vi ni = __builtin_convertvector(n, vi), top = ni > 127;  // (top: -1 where n = 128)
  const vi bits = (ni + top + 127) << 23;                           // 2^n, or 2^127 for n = 128
  vf scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  const vf y1 = p * scale;
  const vf y = top ? y1 + y1 : y1;
  return x != x ? x : y;  // NaN stays NaN (the clamp would have lost it)
}

// The Exp op: exp(x), with inf above 88.7228 (where e^x overflows a float) and 0 below -87.3365
// (e^x is under the smallest normal float there; libm gives a subnormal, < 1.2e-38 away).
inline vf exp_op(vf x) {
  const vf y = exp(x);
  const vf big = x > 88.7228394f ? splat(__builtin_inff()) : y;
  return x < -87.3365479f ? splat(0.f) : big;  // (NaN compares false both times: stays NaN)
}

// tanh: for |x| < 0.625 the odd polynomial of Cephes' tanhf (x + x^3 P(x^2), relative error
// about 1e-7), beyond 1 - 2 / (e^(2|x|) + 1) with tanh's sign (1 where e^(2|x|) saturates).
inline vf tanh(vf x) {
  const vf ax = x < 0.f ? -x : x, z = x * x;
  vf p = splat(-5.70498872745e-3f);
  p = p * z + splat(2.06390887954e-2f);
  p = p * z - splat(5.37397155531e-2f);
  p = p * z + splat(1.33314422036e-1f);
  p = p * z - splat(3.33332819422e-1f);
  const vf small = p * z * x + x;
  const vf big_abs = splat(1.f) - splat(2.f) / (exp(ax + ax) + splat(1.f));
  const vf big = x < 0.f ? -big_abs : big_abs;
  const vf y = ax < 0.625f ? small : big;
  return x != x || x == 0.f ? x : y;  // (x + x^3 P would make -0 +0)
}

// log(1 + u) for u in [0, 1]: log(w), w = 1 + u in [1, 2], by Cephes' logf (w = m 2^e, m - 1 in
// [-0.29, 0.41], a degree-9 polynomial), then times u / (w - 1) (exact: w - 1 is), which puts
// back what rounding 1 + u lost (Goldberg's log1p); u itself where 1 + u rounds to 1.
inline vf log1p_unit(vf u) {
  const vf w = splat(1.f) + u;
  const vi big = w >= 1.41421356f;  // (-1: e = 1, m = w / 2)
  const vf e = big ? splat(1.f) : splat(0.f), f = (big ? w * 0.5f : w) - 1.f, z = f * f;
  vf p = splat(7.0376836292e-2f);
  p = p * f - splat(1.1514610310e-1f);
  p = p * f + splat(1.1676998740e-1f);
  p = p * f - splat(1.2420140846e-1f);
  p = p * f + splat(1.4249322787e-1f);
  p = p * f - splat(1.6668057665e-1f);
  p = p * f + splat(2.0000714765e-1f);
  p = p * f - splat(2.4999993993e-1f);
  p = p * f + splat(3.3333331174e-1f);
  const vf y = p * f * z - 2.12194440e-4f * e - 0.5f * z;
  const vf lw = f + y + 0.693359375f * e;
  return w == 1.f ? u : lw * u / (w - 1.f);
}

// softplus(x) = max(x, 0) + log(1 + e^-|x|), the reference's two branches in one.
inline vf softplus(vf x) {
  const vf ax = x < 0.f ? -x : x;
  const vf y = vmax(x, splat(0.f)) + log1p_unit(exp(-ax));
  return x != x ? x : y;
}

inline vf sigmoid(vf x) {
  const vf y = splat(1.f) / (splat(1.f) + exp(-x));
  return x != x ? x : y;
}

inline vf erf(vf x) {
  const vf ax = x < 0.f ? -x : x;
  // Small |x|: 2 / sqrt(pi) (x - x^3 / 3 + x^5 / 10 - x^7 / 42 + x^9 / 216 - x^11 / 1320 + x^13 / 9360).
  const vf x2 = x * x;
  vf s = splat(1.f / 9360.f);
  s = s * x2 - splat(1.f / 1320.f);
  s = s * x2 + splat(1.f / 216.f);
  s = s * x2 - splat(1.f / 42.f);
  s = s * x2 + splat(1.f / 10.f);
  s = s * x2 - splat(1.f / 3.f);
  s = s * x2 + splat(1.f);
  const vf small = splat(1.12837917f) * x * s;
  // Larger |x|: Abramowitz and Stegun 7.1.26.
  const vf t = splat(1.f) / (splat(1.f) + splat(0.3275911f) * ax);
  vf q = splat(1.061405429f);
  q = q * t - splat(1.453152027f);
  q = q * t + splat(1.421413741f);
  q = q * t - splat(0.284496736f);
  q = q * t + splat(0.254829592f);
  const vf big_abs = vmin(splat(1.f) - q * t * exp(-x2), splat(1.f));
  const vf big = x < 0.f ? -big_abs : big_abs;
  const vf y = ax < 0.5f ? small : big;
  return x != x ? x : y;
}

}  // namespace sluice::ops::simd
