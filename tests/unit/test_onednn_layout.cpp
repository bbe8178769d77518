// onednn::blocked_offsets (ops/common/onednn.h) against oneDNN's own reorder: for plain and
// blocked weight formats, and for the formats convolution primitives choose on this machine
// (odd channel counts included, whose blocks are padded), every element a reorder writes must
// sit where the offsets say, and every padding element must be zero.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "ops/common/onednn.h"
#include "ops/gated/weight_gather.h"

namespace {

using dnnl::memory;
using tag = memory::format_tag;
namespace onednn = sluice::ops::onednn;

// Reorders random plain OIHW data into `to`, then reads every logical element back through
// the offsets; also checks that the offsets of all (padded) indices are distinct and in range.
void check_layout(const memory::dims& dims, const memory::desc& to) {
  const memory::desc plain(dims, memory::data_type::f32, tag::oihw);
  std::vector<float> src(plain.get_size() / sizeof(float));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);  // never zero: a wrong offset cannot hit padding by luck
  for (auto& v : src) v = u(rng);
  const memory packed = onednn::pack(plain, src.data(), to);
  const auto* dst = static_cast<const float*>(packed.get_data_handle());
  const size_t n = to.get_size() / sizeof(float);
  const onednn::BlockedOffsets off = onednn::blocked_offsets(to);
  ASSERT_TRUE(off.ok());
  ASSERT_EQ(off.along.size(), 4u);
  std::vector<int> hits(n, 0);
  const auto& A = off.along;
  for (size_t o = 0; o < A[0].size(); ++o)
    for (size_t i = 0; i < A[1].size(); ++i)
      for (size_t h = 0; h < A[2].size(); ++h)
        for (size_t w = 0; w < A[3].size(); ++w) {
          const int64_t at = off.offset0 + A[0][o] + A[1][i] + A[2][h] + A[3][w];
          ASSERT_GE(at, 0);
          ASSERT_LT(static_cast<size_t>(at), n);
          ++hits[static_cast<size_t>(at)];
          const bool inside = static_cast<int64_t>(o) < dims[0] && static_cast<int64_t>(i) < dims[1];
          const float want =
              inside ? src[((o * static_cast<size_t>(dims[1]) + i) * static_cast<size_t>(dims[2]) + h) *
                               static_cast<size_t>(dims[3]) +
                           w]
                     : 0.f;
          ASSERT_EQ(dst[at], want) << "o=" << o << " i=" << i << " h=" << h << " w=" << w;
        }
  for (size_t k = 0; k < n; ++k) ASSERT_LE(hits[k], 1) << "two indices map to element " << k;
}

TEST(OneDnnLayout, BlockedOffsetsMatchReorder) {
  const memory::dims shapes[] = {{32, 48, 3, 3}, {20, 13, 3, 3}, {7, 5, 1, 1}, {70, 33, 5, 5}};
  const tag formats[] = {tag::oihw, tag::hwio, tag::OIhw16i16o, tag::OIhw8i8o, tag::OIhw16o16i, tag::Ohwi16o,
                         tag::OIhw4i16o4i, tag::OIhw8i16o2i};
  for (const auto& d : shapes)
    for (tag f : formats) {
      SCOPED_TRACE("dims " + std::to_string(d[0]) + "x" + std::to_string(d[1]) + " format " +
                   std::to_string(static_cast<int>(f)));
      check_layout(d, memory::desc(d, memory::data_type::f32, f));
    }
}

TEST(OneDnnLayout, OffsetsOfFormatsConvolutionsChoose) {
  // (k_in, k_out) as gated layers meet them: multiples of 16 and not.
  const std::pair<int64_t, int64_t> shapes[] = {{64, 64}, {128, 256}, {37, 50}, {3, 64}, {200, 100}};
  for (auto [ki, ko] : shapes) {
    SCOPED_TRACE("k_in " + std::to_string(ki) + " k_out " + std::to_string(ko));
    const memory::desc src({1, ki, 28, 28}, memory::data_type::f32, tag::nhwc),
        dst({1, ko, 28, 28}, memory::data_type::f32, tag::nhwc), w({ko, ki, 3, 3}, memory::data_type::f32, tag::any);
    dnnl::convolution_forward::desc cd(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, w,
                                       dst, {1, 1}, {1, 1}, {1, 1});
    dnnl::convolution_forward::primitive_desc pd(cd, onednn::engine());
    check_layout({ko, ki, 3, 3}, pd.weights_desc());
  }
}

// The gated conv's one-pass gather equals gathering plain OIHW and reordering it, padding
// included, on the layouts convolution primitives choose for odd channel counts: a small
// selection, and one large enough for the gather's parallel loop (> 65536 values).
void check_gather(int64_t c, int64_t m, const std::vector<int32_t>& in_ch, const std::vector<int32_t>& out_ch) {
  const int64_t kh = 3, kw = 3, taps = kh * kw;
  std::vector<float> w(static_cast<size_t>(m * c * taps));
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (auto& v : w) v = u(rng);
  const auto ki = static_cast<int64_t>(in_ch.size()), ko = static_cast<int64_t>(out_ch.size());
  std::vector<float> plain;
  for (int32_t o : out_ch)
    for (int32_t i : in_ch)
      for (int64_t t = 0; t < taps; ++t) plain.push_back(w[static_cast<size_t>((o * c + i) * taps + t)]);
  for (tag f : {tag::any, tag::OIhw16i16o, tag::OIhw4i16o4i, tag::hwio}) {
    memory::desc wd({ko, ki, kh, kw}, memory::data_type::f32, f);
    if (f == tag::any) {  // what a conv primitive on this machine picks
      const memory::desc src({1, ki, 20, 20}, memory::data_type::f32, tag::nhwc),
          dst({1, ko, 20, 20}, memory::data_type::f32, tag::nhwc);
      dnnl::convolution_forward::desc cd(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
                                         wd, dst, {1, 1}, {1, 1}, {1, 1});
      wd = dnnl::convolution_forward::primitive_desc(cd, onednn::engine()).weights_desc();
    }
    const memory want = onednn::pack(memory::desc({ko, ki, kh, kw}, memory::data_type::f32, tag::oihw), plain.data(), wd);
    const size_t n = wd.get_size() / sizeof(float);
    std::vector<float> got(n, NAN);  // padding the gather forgot would stay NaN
    sluice::ops::gated::gather_weights(w.data(), c, kh, kw, out_ch.data(), ko, in_ch.data(), ki,
                                       onednn::blocked_offsets(wd), got.data());
    const auto* wp = static_cast<const float*>(want.get_data_handle());
    for (size_t k = 0; k < n; ++k)
      ASSERT_EQ(got[k], wp[k]) << "element " << k << " of format " << static_cast<int>(f) << ", " << ko << "x" << ki;
  }
}

TEST(OneDnnLayout, GatherWeightsEqualsGatherThenReorder) {
  check_gather(40, 36, {0, 3, 4, 9, 17, 18, 19, 25, 31, 38, 39}, {1, 2, 7, 8, 20, 30, 35});
  std::vector<int32_t> in_ch, out_ch;  // 100 of 160 inputs, 90 of 150 outputs: 81000 values
  for (int32_t i = 0; i < 100; ++i) in_ch.push_back(i * 8 / 5);
  for (int32_t o = 0; o < 90; ++o) out_ch.push_back(o * 5 / 3);
  check_gather(160, 150, in_ch, out_ch);
}

TEST(OneDnnLayout, NonBlockedFormatsAreRefused) {
  EXPECT_FALSE(onednn::blocked_offsets(memory::desc()).ok());
}

}  // namespace
