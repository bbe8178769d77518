// The gated conv's direct kernel (ops/gated/direct_conv.h) against a plain loop, over odd
// shapes, strides 1 and 2, asymmetric pads, 1x1 to 5x5 kernels, channel subsets read from a
// compact or a dense input, and every remainder of the 6-channel and 64-pixel blocking.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "ops/gated/direct_conv.h"
#include "ops/sparse/sparse.h"
#include "runtime/plan.h"
#include "tests/unit/kernel_compare.h"

namespace {

using sluice::ops::gated::DirectConvShape;

struct Case {
  int64_t c, m, h, w, k, stride, pt, pl, pb, pr, ki, ko;
  bool compact;
};

void run_case(const Case& t, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  const int64_t oh = (t.h + t.pt + t.pb - t.k) / t.stride + 1, ow = (t.w + t.pl + t.pr - t.k) / t.stride + 1;
  DirectConvShape s{t.c, t.m, t.h, t.w, t.k, t.k, oh, ow, t.pt, t.pl, t.stride};
  std::vector<int32_t> all_in(static_cast<size_t>(t.c)), all_out(static_cast<size_t>(t.m));
  std::iota(all_in.begin(), all_in.end(), 0);
  std::iota(all_out.begin(), all_out.end(), 0);
  std::shuffle(all_in.begin(), all_in.end(), rng);
  std::shuffle(all_out.begin(), all_out.end(), rng);
  std::vector<int32_t> in_ch(all_in.begin(), all_in.begin() + t.ki), out_ch(all_out.begin(), all_out.begin() + t.ko);
  std::sort(in_ch.begin(), in_ch.end());
  std::sort(out_ch.begin(), out_ch.end());
  const int64_t xs = t.compact ? t.ki : t.c;
  std::vector<float> x(static_cast<size_t>(t.h * t.w * xs)), wt(static_cast<size_t>(t.m * t.c * t.k * t.k)),
      bias(static_cast<size_t>(t.m));
  for (auto& v : x) v = nd(rng);
  for (auto& v : wt) v = nd(rng);
  for (auto& v : bias) v = nd(rng);
  std::vector<int32_t> pos(in_ch);
  if (t.compact) std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> y(static_cast<size_t>(oh * ow * t.ko), NAN);
  std::vector<std::byte> scratch(sluice::ops::gated::direct_conv_scratch(s));
  sluice::ops::gated::direct_conv(s, x.data(), xs, pos.data(), in_ch.data(), t.ki, wt.data(), bias.data(), out_ch.data(),
                                  t.ko, y.data(), scratch.data());
  double max_err = 0;
  for (int64_t oy = 0; oy < oh; ++oy)
    for (int64_t ox = 0; ox < ow; ++ox)
      for (int64_t jo = 0; jo < t.ko; ++jo) {
        const int64_t o = out_ch[static_cast<size_t>(jo)];
        double ref = bias[static_cast<size_t>(o)];
        for (int64_t a = 0; a < t.k; ++a)
          for (int64_t b = 0; b < t.k; ++b) {
            const int64_t iy = oy * t.stride + a - t.pt, ix = ox * t.stride + b - t.pl;
            if (iy < 0 || iy >= t.h || ix < 0 || ix >= t.w) continue;
            for (int64_t ji = 0; ji < t.ki; ++ji) {
              const int64_t i = in_ch[static_cast<size_t>(ji)];
              ref += static_cast<double>(x[static_cast<size_t>((iy * t.w + ix) * xs + pos[static_cast<size_t>(ji)])]) *
                     wt[static_cast<size_t>(((o * t.c + i) * t.k + a) * t.k + b)];
            }
          }
        max_err = std::max(max_err, std::fabs(ref - y[static_cast<size_t>((oy * ow + ox) * t.ko + jo)]));
      }
  EXPECT_LT(max_err, 1e-3) << "c=" << t.c << " m=" << t.m << " " << t.h << "x" << t.w << " k=" << t.k
                           << " stride=" << t.stride << " ki=" << t.ki << " ko=" << t.ko << " compact=" << t.compact;
}

TEST(DirectConv, MatchesPlainLoop) {
  const Case cases[] = {
      {16, 32, 7, 7, 3, 1, 1, 1, 1, 1, 8, 16, true},      // ResNet late layer shape, compact in
      {24, 20, 14, 14, 3, 1, 1, 1, 1, 1, 24, 13, false},  // dense in, odd k_out (6-block remainder 1)
      {10, 9, 9, 11, 3, 2, 1, 1, 1, 1, 7, 5, true},       // stride 2, odd sizes
      {12, 14, 8, 8, 3, 2, 1, 1, 1, 1, 12, 14, false},    // stride 2, every channel
      {5, 7, 6, 5, 5, 1, 2, 1, 0, 3, 3, 4, false},        // 5x5, asymmetric pads
      {6, 6, 13, 17, 1, 1, 0, 0, 0, 0, 1, 1, true},       // 1x1, one channel each
      {8, 12, 15, 15, 1, 2, 0, 0, 0, 0, 5, 11, false},    // 1x1 stride 2
      {33, 40, 12, 10, 3, 1, 0, 0, 0, 0, 17, 29, true},   // no padding; several 64-pixel blocks
      {6, 10, 100, 97, 3, 1, 1, 1, 1, 1, 6, 9, false},     // a large map: tiles of blocks, stored tile by tile
      {4, 7, 250, 243, 3, 2, 1, 0, 2, 1, 3, 7, true},      // the same at stride 2, asymmetric pads
  };
  uint32_t seed = 1;
  for (const Case& t : cases) run_case(t, seed++);
}

TEST(DirectConv, Supported) {
  const int64_t s1[] = {1, 1}, s2[] = {2, 2}, s3[] = {3, 3}, s12[] = {1, 2}, d1[] = {1, 1}, d2[] = {2, 2};
  EXPECT_TRUE(sluice::ops::gated::direct_conv_supported(s1, d1));
  EXPECT_TRUE(sluice::ops::gated::direct_conv_supported(s2, d1));
  EXPECT_FALSE(sluice::ops::gated::direct_conv_supported(s3, d1));
  EXPECT_FALSE(sluice::ops::gated::direct_conv_supported(s12, d1));
  EXPECT_FALSE(sluice::ops::gated::direct_conv_supported(s1, d2));
}

}  // namespace

// planar::store_block (the sparse kernel's per-task epilogue) on flat blocks that wrap rows
// and run past the last row: grid columns beyond ow and rows beyond oh are skipped, every
// output pixel is written exactly once across the blocks, for the vector and scalar paths.
// planar::narrow_grid against a brute-force reading of a row: on the narrowed grid, every tap
// of every real output pixel must read what the full grid gives it (the input's value, or the
// zero of padding), and every input column must have its place in the row. Over kernel widths
// 1-7, strides 1 and 2, left pads 0-3, widths 1-40; it must also say yes for the 7x7 stride-2
// stem and the 5x5 stride-1 pad-2 conv it is there for.
TEST(PlanarGeometry, NarrowGridOnlyWhereEveryTapReadsTheSame) {
  int narrowed = 0;
  for (int64_t kw = 1; kw <= 7; ++kw)
    for (int64_t st = 1; st <= 2; ++st)
      for (int64_t pl = 0; pl <= 3; ++pl)
        for (int64_t w = 1; w <= 40; ++w)
          for (int64_t pr = 0; pr <= 3; ++pr) {
            if (w + pl + pr < kw) continue;
            const int64_t ow = (w + pl + pr - kw) / st + 1;
            const sluice::ops::planar::Geometry g{5, w, 3, kw, 5, ow, 1, pl, st};
            for (int64_t to = 1; to < g.grid_w(); ++to) {
              // Input column x sits at grid column (x + pl) / st of phase (x + pl) % st.
              bool exact = (pl + w - 1) / st < to;
              for (int64_t ox = 0; ox < ow && exact; ++ox)
                for (int64_t kx = 0; kx < kw && exact; ++kx) {
                  const int64_t col = ox + kx / st, phase = kx % st;  // on the full grid
                  const int64_t want = col * st + phase - pl;         // input column, or padding
                  const bool want_pad = want < 0 || want >= w;
                  // On the narrowed grid: this row, or past its end the next row's first columns.
                  const int64_t got = (col < to ? col : col - to) * st + phase - pl;
                  const bool got_pad = got < 0 || got >= w;
                  exact = col < to ? true : (want_pad && got_pad);
                }
              const bool said = sluice::ops::planar::narrow_grid(g, to);
              EXPECT_TRUE(!said || exact) << "k" << kw << " s" << st << " pl" << pl << " w" << w << " to " << to;
              narrowed += said;
            }
          }
  EXPECT_GT(narrowed, 100);
  const sluice::ops::planar::Geometry stem{224, 224, 7, 7, 112, 112, 3, 3, 2}, five{56, 56, 5, 5, 56, 56, 2, 2, 1};
  EXPECT_TRUE(sluice::ops::planar::narrow_grid(stem, 114));
  EXPECT_TRUE(sluice::ops::planar::narrow_grid(five, 58));
}

TEST(PlanarStoreBlock, BlocksCoverTheOutputOnce) {
  namespace planar = sluice::ops::planar;
  using sluice::graph::Activation;
  std::mt19937 rng(6);
  std::normal_distribution<float> nd;
  const planar::Geometry g{7, 7, 3, 3, 7, 7, 1, 1, 1};  // 7 x 7 output, grid rows of 9, one 64-block
  const planar::Geometry g2{13, 11, 3, 3, 13, 11, 1, 1, 1};  // rows of 13: blocks end mid-row
  for (const planar::Geometry& geo : {g, g2})
    for (int64_t k : {5, 16, 21})
      for (auto kind : {Activation::Relu, Activation::LeakyRelu}) {
        const int64_t q = geo.flat_out(), npx = 24;  // blocks of 24: not a multiple of the tile
        std::vector<float> planes(static_cast<size_t>(k * q)), bias(static_cast<size_t>(k));
        for (auto* v : {&planes, &bias})
          for (auto& x : *v) x = nd(rng);
        // Slack of two grid rows after the output: a stray write past it is caught, not a crash.
        std::vector<float> y(static_cast<size_t>((geo.oh * geo.ow + 2 * geo.grid_w()) * k), 99.f);
        const sluice::graph::FusedActivation act{kind, 0.1f, 0.f};
        for (int64_t q0 = 0; q0 < q; q0 += npx) {
          std::vector<float> block(static_cast<size_t>(k * npx));  // channel j at j * npx
          for (int64_t j = 0; j < k; ++j)
            for (int64_t i = 0; i < std::min(npx, q - q0); ++i)
              block[static_cast<size_t>(j * npx + i)] = planes[static_cast<size_t>(j * q + q0 + i)];
          planar::store_block(geo, block.data(), npx, q0, std::min(npx, q - q0), k, y.data(), k, bias.data(), nullptr,
                              k, act);
        }
        for (int64_t p = 0; p < geo.oh * geo.ow; ++p)
          for (int64_t j = 0; j < k; ++j) {
            const int64_t oy = p / geo.ow, ox = p % geo.ow;
            float v = planes[static_cast<size_t>(j * q + oy * geo.grid_w() + ox)] + bias[static_cast<size_t>(j)];
            v = kind == Activation::Relu ? std::max(v, 0.f) : (v < 0 ? 0.1f * v : v);
            ASSERT_FLOAT_EQ(y[static_cast<size_t>(p * k + j)], v) << "k=" << k << " pixel " << p << " channel " << j;
          }
        for (size_t i = static_cast<size_t>(geo.oh * geo.ow * k); i < y.size(); ++i)
          ASSERT_EQ(y[i], 99.f) << "wrote past the output";
      }
}

// planar::unpack (the planar -> NHWC epilogue of the direct and sparse kernels) against a plain
// loop: partial 16 x 16 tiles in both pixels and channels, bias, residual sum, and the vector
// (None, Relu, LeakyRelu, Clip, HardSwish) and scalar (Sigmoid) activation paths against
// graph::apply_activation, into an output with a wider stride.
TEST(PlanarUnpack, MatchesPlainLoop) {
  namespace planar = sluice::ops::planar;
  using sluice::graph::Activation;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int64_t k : {1, 16, 37})
    for (auto kind : {Activation::None, Activation::Relu, Activation::LeakyRelu, Activation::Clip, Activation::HardSwish,
                      Activation::Sigmoid})
      for (bool with_sum : {false, true}) {
        const planar::Geometry g{5, 19, 3, 3, 5, 19, 1, 1, 1};  // 5 x 19 output, grid rows of 21
        const int64_t q = g.flat_out(), stride = k + 3;
        std::vector<float> planes(static_cast<size_t>(k * q)), bias(static_cast<size_t>(k));
        std::vector<float> sum(static_cast<size_t>(g.oh * g.ow * k));
        for (auto* v : {&planes, &bias, &sum})
          for (auto& x : *v) x = nd(rng);
        std::vector<float> y(static_cast<size_t>(g.oh * g.ow * stride), 99.f);
        const sluice::graph::FusedActivation act{kind, kind == Activation::Clip ? -0.5f : 0.1f, 0.7f};
        planar::unpack(g, planes.data(), k, y.data(), stride, bias.data(), with_sum ? sum.data() : nullptr, k, act);
        for (int64_t oy = 0; oy < g.oh; ++oy)
          for (int64_t ox = 0; ox < g.ow; ++ox)
            for (int64_t j = 0; j < stride; ++j) {
              const int64_t p = oy * g.ow + ox;
              const float got = y[static_cast<size_t>(p * stride + j)];
              if (j >= k) {
                ASSERT_EQ(got, 99.f) << "wrote past channel " << k;
                continue;
              }
              float v = planes[static_cast<size_t>(j * q + oy * g.grid_w() + ox)] + bias[static_cast<size_t>(j)];
              if (with_sum) v += sum[static_cast<size_t>(p * k + j)];
              v = sluice::graph::apply_activation(act, v);  // the scalar epilogue; the tiles use vectors
              ASSERT_FLOAT_EQ(got, v) << "k=" << k << " pixel " << p << " channel " << j << " act "
                                      << static_cast<int>(kind);
            }
      }
}

// planar::pack against a plain loop: strides 1 and 2, zero and non-zero pads, 1 and 3
// shifted copies, channel lists with runs of 16 consecutive channels (the transposed path)
// next to scattered ones (the scalar path), from NHWC and from NCHW.
TEST(PlanarPack, MatchesPlainLoop) {
  namespace planar = sluice::ops::planar;
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  const int64_t c = 40, h = 9, w = 21;
  std::vector<float> x(static_cast<size_t>(h * w * c));
  for (auto& v : x) v = nd(rng);
  std::vector<int32_t> runs(35), scattered{3, 1, 4, 15, 9, 26};
  std::iota(runs.begin(), runs.begin() + 32, 2);  // 2..33: two runs of 16
  runs[32] = 0, runs[33] = 39, runs[34] = 5;
  std::vector<float> x_nchw(x.size());  // the same tensor, NCHW
  for (int64_t p = 0; p < h * w; ++p)
    for (int64_t j = 0; j < c; ++j) x_nchw[static_cast<size_t>(j * h * w + p)] = x[static_cast<size_t>(p * c + j)];
  for (const bool nchw : {false, true})
  for (int64_t stride : {1, 2})
    for (int64_t pad : {0, 1})
      for (int64_t shifts : {1, 3})
        for (const auto* pos : {&runs, &scattered}) {
          const int64_t oh = (h + 2 * pad - 3) / stride + 1, ow = (w + 2 * pad - 3) / stride + 1;
          const planar::Geometry g{h, w, 3, 3, oh, ow, pad, pad, stride};
          const auto k = static_cast<int64_t>(pos->size());
          const int64_t copy = g.planes_size(k), ps = g.plane(), gw = g.grid_w();
          std::vector<float> got(static_cast<size_t>(shifts * copy), 7.f), want(got.size(), 0.f);
          for (int64_t j = 0; j < k; ++j)
            for (int64_t yy = 0; yy < h; ++yy)
              for (int64_t xx = 0; xx < w; ++xx) {
                const int64_t py = yy + pad, px = xx + pad;
                if (py >= g.padded_h() || px >= g.padded_w()) continue;
                const int64_t at = ((py % stride) * stride + px % stride) * k * ps + j * ps + (py / stride) * gw + px / stride;
                for (int64_t s = 0; s < shifts; ++s)
                  if (at >= s) want[static_cast<size_t>(s * copy + at - s)] = x[static_cast<size_t>((yy * w + xx) * c + (*pos)[static_cast<size_t>(j)])];
              }
          if (nchw)
            planar::pack(g, x_nchw.data(), c, pos->data(), k, got.data(), shifts, planar::Source::Nchw);
          else
            planar::pack(g, x.data(), c, pos->data(), k, got.data(), shifts);
          for (size_t i = 0; i < got.size(); ++i)
            ASSERT_EQ(got[i], want[i]) << (nchw ? "NCHW" : "NHWC") << " stride " << stride << " pad " << pad << " shifts " << shifts << " k " << k
                                       << " at " << i;
        }
}

// pack against a plain loop over every element of the buffer (it starts at 7, not 0: padding
// must be written as zeros) for kernels, strides and pads where rows or columns of padding
// differ by phase: 7x7 stride 2 pad 3 (the stem), 5x5 pad 2, 3x3 with top pad 0 and left pad 1
// or 2 (right/bottom follow from the output size), stride 2 on even and odd maps, a map smaller
// than the kernel, a 1x1 stride-2 conv (the phases no tap reads are left as they were), a
// narrowed grid (planar::narrow_grid), and NHWC, NCHW and resident-plane sources.
TEST(PlanarPack, EveryGeometryAndSource) {
  namespace planar = sluice::ops::planar;
  struct G {
    int64_t h, w, kh, kw, stride, pt, pl, pb, pr;
  };
  const G cases[] = {{14, 14, 7, 7, 2, 3, 3, 3, 3}, {13, 11, 7, 7, 2, 3, 3, 3, 3}, {9, 10, 5, 5, 1, 2, 2, 2, 2},
                     {8, 9, 3, 3, 1, 0, 1, 2, 1},   {7, 12, 3, 3, 2, 0, 2, 1, 0},  {2, 3, 5, 5, 1, 2, 2, 2, 2},
                     {10, 10, 3, 3, 2, 1, 1, 0, 0}, {6, 5, 2, 2, 1, 1, 1, 0, 0}, {9, 9, 1, 1, 2, 0, 0, 0, 0}};
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  for (const G& t : cases)
    for (const planar::Source from : {planar::Source::Nhwc, planar::Source::Nchw, planar::Source::Resident})
      for (const bool narrow : {false, true}) {
        const int64_t oh = (t.h + t.pt + t.pb - t.kh) / t.stride + 1, ow = (t.w + t.pl + t.pr - t.kw) / t.stride + 1;
        planar::Geometry g{t.h, t.w, t.kh, t.kw, oh, ow, t.pt, t.pl, t.stride};
        if (narrow && !planar::narrow_grid(g, ow + 2)) continue;
        if (narrow) g.narrow_w = ow + 2;
        const int64_t c = 18, ps = g.plane(), gw = g.grid_w(), phase_size = c * ps;
        std::vector<int32_t> pos(static_cast<size_t>(c));
        std::iota(pos.begin(), pos.end(), 0);  // a run of 16 (the NHWC tile path) and 2 more
        std::vector<float> x(static_cast<size_t>(c * t.h * t.w));
        for (auto& v : x) v = nd(rng);
        auto at_nhwc = [&](int64_t j, int64_t yy, int64_t xx) { return x[static_cast<size_t>((yy * t.w + xx) * c + j)]; };
        std::vector<float> src;
        if (from == planar::Source::Nhwc) src = x;
        if (from == planar::Source::Nchw) {
          src.resize(x.size());
          for (int64_t j = 0; j < c; ++j)
            for (int64_t p = 0; p < t.h * t.w; ++p) src[static_cast<size_t>(j * t.h * t.w + p)] = x[static_cast<size_t>(p * c + j)];
        }
        if (from == planar::Source::Resident) {
          const int64_t rp = planar::resident(t.h, t.w).plane();
          src.assign(static_cast<size_t>(c * rp), 0.f);
          for (int64_t j = 0; j < c; ++j)
            for (int64_t yy = 0; yy < t.h; ++yy)
              for (int64_t xx = 0; xx < t.w; ++xx)
                src[static_cast<size_t>(j * rp + planar::resident_index(t.w, yy, xx))] = at_nhwc(j, yy, xx);
        }
        std::vector<float> got(static_cast<size_t>(g.planes_size(c)), 7.f), want(got.size(), 0.f);
        for (int64_t j = 0; j < c; ++j)
          for (int64_t yy = 0; yy < t.h; ++yy)
            for (int64_t xx = 0; xx < t.w; ++xx) {
              const int64_t py = yy + t.pt, px = xx + t.pl;
              if (py >= g.padded_h() || px >= g.padded_w()) continue;
              const int64_t phase = (py % t.stride) * t.stride + px % t.stride;
              want[static_cast<size_t>(phase * phase_size + j * ps + (py / t.stride) * gw + px / t.stride)] = at_nhwc(j, yy, xx);
            }
        // Phases no tap reads (kernel smaller than the stride) stay as they were.
        for (int64_t phase = 0; phase < t.stride * t.stride; ++phase)
          if (phase / t.stride >= t.kh || phase % t.stride >= t.kw)
            std::fill_n(want.begin() + phase * phase_size, phase_size, 7.f);
        planar::pack(g, src.data(), c, pos.data(), c, got.data(), 1, from);
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_EQ(got[i], want[i]) << "source " << static_cast<int>(from) << (narrow ? " narrow" : "") << " " << t.h
                                     << "x" << t.w << " k" << t.kh << "x" << t.kw << " s" << t.stride << " pads " << t.pt
                                     << "," << t.pl << " at " << i << " (phase " << static_cast<int64_t>(i) / phase_size
                                     << ", channel " << static_cast<int64_t>(i) % phase_size / ps << ", offset "
                                     << static_cast<int64_t>(i) % ps << " of grid " << gw << " wide)";
      }
}

// The direct kernel as a dense conv (ops/conv/direct.cpp, for channel counts off oneDNN's
// 16-channel blocks) against oneDNN's conv on the same node and data: odd channel counts,
// strides 1 and 2, a 7x7 stem, batch 3, fused residual sum + Relu (also laid over the output, as
// plans do) and a LeakyRelu epilogue.
namespace sluice::testing {
namespace {

// NaN in the input through a conv with a fused Relu or Clip (ReLU6): Sluice's own kernels (the
// direct dense conv and the sparse conv, whose epilogue is planar::store_block) give what oneDNN's
// post-ops give (Relu: 0, Clip: its min), so the answer does not depend on the measured choice.
TEST(FusedEpilogue, NaNAsOneDnnInEveryConvKernel) {
  for (const char* act : {"Relu", "Clip"}) {
    OnnxBuilder b(13);
    b.input("x", {1, 13, 9, 9}).init_random("w", {19, 13, 3, 3}, 0.3f).init_random("b", {19});
    b.init("lo", {}, {0.f}).init("hi", {}, {6.f});
    auto& conv = b.node("Conv", {"x", "w", "b"}, {"y"});
    OnnxBuilder::attr_ints(conv, "pads", {1, 1, 1, 1});
    if (std::string(act) == "Relu")
      b.node("Relu", {"y"}, {"z"});
    else
      b.node("Clip", {"y", "lo", "hi"}, {"z"});
    b.output("z");
    Model m = b.load();
    runtime::Plan plan(*m.graph(), {}, nhwc_plan_options());
    const graph::Graph& g = plan.graph();
    const graph::Node* node = last_node(g, graph::OpType::Conv);
    ASSERT_NE(node, nullptr);
    ASSERT_NE(node->p<graph::ConvParams>().activation.kind, graph::Activation::None) << act << " should fuse";
    const Shape& xs = g.value(node->inputs[0]).shape;
    const Shape& ys = g.value(node->outputs[0]).shape;
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    std::vector<float> x(static_cast<size_t>(xs[0] * xs[1] * xs[2] * xs[3]));
    for (size_t i = 0; i < x.size(); ++i) x[i] = i % 97 == 5 ? std::nanf("") : 3.f * nd(rng);  // a few NaN pixels
    auto run = [&](const ops::Kernel& k) {
      std::vector<float> y(static_cast<size_t>(ys[0] * ys[1] * ys[2] * ys[3]), -1.f);
      std::vector<std::byte> scratch(k.scratch_bytes() + 64);
      ops::TensorView in[] = {{DType::Float32, xs, x.data()}}, out[] = {{DType::Float32, ys, y.data()}};
      k.run({in, out, reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) / 64 * 64)});
      return y;
    };
    auto onednn = ops::make_onednn_conv(g, *node), direct = ops::make_direct_conv(g, *node);
    auto sparse = ops::make_sparse_conv(g, *node);  // dense weights: every tap is a "non-zero"
    ASSERT_NE(onednn, nullptr);
    ASSERT_NE(direct, nullptr);
    ASSERT_NE(sparse, nullptr);
    const std::vector<float> want = run(*onednn);
    int nan_in = 0;
    for (size_t i = 0; i < x.size(); ++i) nan_in += std::isnan(x[i]);
    ASSERT_GT(nan_in, 0);
    for (const ops::Kernel* k : {direct.get(), sparse.get()}) {
      const std::vector<float> got = run(*k);
      int zeros = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(std::isnan(got[i]), std::isnan(want[i])) << act << " " << k->name() << " at " << i;
        if (!std::isnan(want[i])) {
          ASSERT_NEAR(got[i], want[i], 1e-4) << act << " " << k->name() << " at " << i;
        }
        zeros += got[i] == 0.f;
      }
      EXPECT_GT(zeros, 0) << "NaN sums should have become the activation's floor";
    }
  }
}

TEST(DirectDenseConv, MatchesOneDnnOnTheSameNode) {
  const DenseCase cases[] = {{1, 19, 19, 23, 3, 1, true}, {1, 3, 19, 40, 7, 2, false}, {1, 13, 38, 17, 3, 2, false},
                             {1, 19, 7, 9, 1, 1, true}, {3, 5, 21, 11, 5, 1, true},
                             {2, 5, 20, 100, 3, 1, true}, {1, 3, 20, 224, 7, 2, true},  // batch 3, 5x5; then large maps (tiles)
                             // block heights of the packed wide blocks (AVX-512: up to 10
                             // channels) not above: 1, 2, 3, 4, 6, 5 + 6, 8 + 9 + 9; odd maps, stride 2
                             {1, 4, 1, 9, 3, 1, false}, {1, 5, 2, 9, 3, 1, true}, {1, 6, 3, 10, 3, 1, true},
                             {1, 4, 4, 11, 5, 1, false}, {1, 7, 6, 13, 7, 2, false},
                             {1, 8, 11, 12, 3, 2, false}, {2, 5, 26, 15, 3, 1, true}};
  for (const DenseCase& t : cases) {
    const PlannedConv pc(t);
    const graph::Graph& g = pc.graph();
    const graph::Node* node = pc.node;
    ASSERT_NE(node, nullptr);
    EXPECT_EQ(node->p<graph::ConvParams>().fused_sum, t.residual);
    auto direct = ops::make_direct_conv(g, *node), onednn = ops::make_onednn_conv(g, *node);
    ASSERT_NE(direct, nullptr);
    ASSERT_NE(onednn, nullptr);
    // Outputs are O(1) here (weights 0.3 x a few dozen inputs): an absolute bound.
    const double worst = max_kernel_diff(*direct, *onednn, g, *node, 8);
    EXPECT_LT(worst, 1e-3) << t.c << "->" << t.m << " k" << t.k << " s" << t.stride;
  }
}

// oneDNN's conv on its own blocked activation layout with reorders in and out (the form
// make_dense_conv times against NHWC) against its NHWC form on the same node and data: 3x3,
// stride 2, 1x1, a channel count off the 8/16-channel blocks, batch 2, depthwise, the fused
// residual sum (also laid over the output, as plans do) + Relu, and a LeakyRelu.
TEST(OneDnnBlockedConv, MatchesNhwcFormOnTheSameNode) {
  const DenseCase cases[] = {{1, 16, 32, 14, 3, 1, true}, {2, 24, 40, 15, 3, 2, false}, {1, 32, 16, 9, 1, 1, true},
                             {1, 13, 19, 11, 3, 1, true}, {1, 32, 32, 12, 3, 1, false, 32}};
  int built = 0;
  for (const DenseCase& t : cases) {
    const PlannedConv pc(t);
    const graph::Graph& g = pc.graph();
    const graph::Node* node = pc.node;
    ASSERT_NE(node, nullptr);
    ASSERT_EQ(node->layout, graph::Layout::NHWC);
    EXPECT_EQ(node->p<graph::ConvParams>().fused_sum, t.residual);
    auto nhwc = ops::make_onednn_conv(g, *node), blocked = ops::make_onednn_conv_blocked(g, *node);
    ASSERT_NE(nhwc, nullptr);
    if (!blocked) continue;  // oneDNN keeps NHWC for this shape on this machine: no second form
    ++built;
    EXPECT_NE(blocked->name().find("blocked"), std::string::npos) << blocked->name();
    EXPECT_LT(max_kernel_diff(*nhwc, *blocked, g, *node, 9), 1e-4) << t.c << "->" << t.m << " k" << t.k << " s" << t.stride
                                                                   << " g" << t.group;
  }
  if (built == 0) GTEST_SKIP() << "oneDNN chose NHWC activations for every case here";
}

// oneDNN's conv in bands of output rows, one single-threaded primitive per thread (the form
// make_dense_conv times on several threads), against the plain conv on the same node and data:
// 2 and 3 bands (a middle band has no padding rows), 3x3, 5x5, 7x7 stride 2 (bands whose input
// rows overlap), 1x1, odd row counts, the fused residual sum (also laid over the output, as
// plans do) + Relu, and a LeakyRelu. Batch 2 and groups are not its shapes: it refuses them.
TEST(OneDnnRowsConv, MatchesThePlainConvOnTheSameNode) {
  const DenseCase cases[] = {{1, 77, 77, 14, 3, 1, true}, {1, 19, 24, 15, 5, 1, false}, {1, 3, 20, 29, 7, 2, true},
                             {1, 32, 40, 9, 1, 1, false}, {1, 13, 19, 11, 3, 2, true}, {1, 8, 8, 7, 3, 1, true}};
  const int saved = omp_get_max_threads();
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    for (const DenseCase& t : cases) {
      const PlannedConv pc(t);
      const graph::Graph& g = pc.graph();
      const graph::Node* node = pc.node;
      ASSERT_NE(node, nullptr);
      EXPECT_EQ(node->p<graph::ConvParams>().fused_sum, t.residual);
      auto plain = ops::make_onednn_conv(g, *node), rows = ops::make_onednn_conv_rows(g, *node);
      ASSERT_NE(plain, nullptr);
      const int64_t oh = g.value(node->outputs[0]).shape[2];
      if (oh < 2 * threads) {
        EXPECT_EQ(rows, nullptr) << "fewer than 2 output rows per thread";
        continue;
      }
      ASSERT_NE(rows, nullptr) << t.c << "->" << t.m << " k" << t.k << " s" << t.stride;
      EXPECT_NE(rows->name().find(std::to_string(threads) + " bands of rows"), std::string::npos) << rows->name();
      EXPECT_LT(max_kernel_diff(*plain, *rows, g, *node, 9), 1e-4)
          << threads << " threads, " << t.c << "->" << t.m << " k" << t.k << " s" << t.stride;
    }
  }
  omp_set_num_threads(1);  // one thread: nothing to split
  const PlannedConv one({1, 77, 77, 14, 3, 1, true});
  EXPECT_EQ(ops::make_onednn_conv_rows(one.graph(), *one.node), nullptr);
  const PlannedConv batch2({2, 16, 16, 14, 3, 1, false});
  omp_set_num_threads(2);
  EXPECT_EQ(ops::make_onednn_conv_rows(batch2.graph(), *batch2.node), nullptr);
  omp_set_num_threads(saved);
}

// A session of a model with fully known input shapes plans once, at load, and its runs use
// that plan: the measured choice's note (both kernels' times, to the microsecond) that run()
// reports for the conv is the one inspect() showed before the run. (Keyed on no shapes, the
// load-time plan was once made again inside the first run, with new timings.)
TEST(Session, RunsThePlanMadeAtLoad) {
  Model m = single_conv({1, 19, 21, 40, 3, 1, false});  // off oneDNN's channel blocks: a measured choice
  Session s(m, {1, true});
  const std::string before = s.inspect();
  ASSERT_NE(before.find("[measured: direct"), std::string::npos) << before;
  RunStats st;
  s.run({{"x", random_tensor({1, 19, 40, 40}, 3)}}, &st);
  std::string kernel;
  for (const auto& l : st.layers)
    if (l.op == "Conv") kernel = l.kernel;
  ASSERT_NE(kernel.find("[measured: direct"), std::string::npos) << kernel;
  EXPECT_NE(before.find(kernel), std::string::npos) << "run() used another plan: " << kernel << "\n" << before;
  EXPECT_EQ(s.inspect(), before);
}

// Measured kernel choices depend on the thread count, so inspect says which one they were made
// for (a 2-thread `inspect` next to a 1-thread `bench` once read as "in-model layers run 2x
// slower than measured").
TEST(Session, InspectNamesTheThreadCountItsChoicesWereMadeFor) {
  Model m = single_conv({1, 19, 21, 40, 3, 1, false});
  for (int threads : {1, 2}) {
    Session s(m, {threads, true});
    const std::string text = s.inspect();
    const std::string want = "kernels chosen for " + std::to_string(threads) + (threads == 1 ? " thread " : " threads ");
    EXPECT_NE(text.find(want), std::string::npos) << text;
    EXPECT_NE(s.inspect(true).find("\"threads\": " + std::to_string(threads)), std::string::npos);
  }
}

}  // namespace
}  // namespace sluice::testing
