// Bad input is refused with a clear error (sluice::Error naming the file, node or
// value and what is wrong), never a crash, a hang, or a wrong answer.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "ops/util.h"
#include "runtime/memory_limit.h"
#include "tests/unit/kernel_compare.h"
#include "tests/unit/onnx_builder.h"

namespace sluice::testing {
namespace {

// Expects `f` to throw sluice::Error whose message contains every fragment.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected sluice::Error";
  } catch (const Error& e) {
    for (const auto& frag : fragments) EXPECT_NE(std::string(e.what()).find(frag), std::string::npos)
        << "message: " << e.what() << "\nmissing: " << frag;
  }
}

std::string write_temp(const std::string& name, const std::string& bytes) {
  auto path = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

OnnxBuilder conv_model(const Shape& w_shape = {4, 3, 3, 3}) {
  OnnxBuilder b;
  b.input("x", {1, 3, 8, 8}).init_random("w", w_shape);
  b.node("Conv", {"x", "w"}, {"y"}, "conv1");
  b.output("y");
  return b;
}

TEST(BadFile, Nonexistent) { expect_error([] { Model::load("/nonexistent/model.onnx"); }, {"/nonexistent/model.onnx", "not found"}); }

TEST(BadFile, Empty) {
  auto p = write_temp("sluice_empty.onnx", "");
  expect_error([&] { Model::load(p); }, {p, "empty"});
}

// A model file of exactly 2 GiB is past protobuf's INT_MAX bytes: refused by name before it is
// read (it failed inside protobuf: "size too big", no file named). A sparse file: no disk used.
TEST(BadFile, ExactlyTwoGiB) {
  const std::string p = (std::filesystem::temp_directory_path() / ("sluice_2gib_" + std::to_string(::getpid()) + ".onnx")).string();
  { std::ofstream(p, std::ios::binary) << ""; }
  std::filesystem::resize_file(p, std::uintmax_t{2} << 30);
  expect_error([&] { Model::load(p); }, {p, "larger than 2 GiB", "external data"});
  std::filesystem::remove(p);
}

// A FIFO as the model (reading it waited forever for a writer), a device, an empty path and a
// loop of symbolic links: each refused by what it is, at once.
TEST(BadFile, NotARegularFile) {
  const std::string fifo = (std::filesystem::temp_directory_path() / ("sluice_fifo_" + std::to_string(::getpid()) + ".onnx")).string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error([&] { Model::load(fifo); }, {fifo, "not a regular file"});
  std::filesystem::remove(fifo);
  expect_error([] { Model::load("/dev/zero"); }, {"/dev/zero", "not a regular file"});
  expect_error([] { Model::load(""); }, {"no model file given"});
  const auto dir = std::filesystem::temp_directory_path();
  const std::string a = (dir / ("sluice_loop_a_" + std::to_string(::getpid()))).string();
  const std::string b = (dir / ("sluice_loop_b_" + std::to_string(::getpid()))).string();
  std::filesystem::create_symlink(b, a);
  std::filesystem::create_symlink(a, b);
  expect_error([&] { Model::load(a); }, {a, "loop of symbolic links"});
  std::filesystem::remove(a);
  std::filesystem::remove(b);
  std::filesystem::create_symlink(b, a);  // to nothing
  expect_error([&] { Model::load(a); }, {a, "symbolic link to a file that does not exist", b});
  std::filesystem::remove(a);
}

// The API's null pointers: an Error, as the header promises, not a crash.
TEST(BadApi, NullPointers) {
  expect_error([] { Model::load_from_memory(nullptr, 100); }, {"null pointer", "100"});
  expect_error([] { Tensor::copy_of(DType::Float32, {4}, nullptr); }, {"null data pointer", "16 bytes"});
  EXPECT_NO_THROW(Tensor::copy_of(DType::Float32, {0}, nullptr));  // nothing to copy
}

TEST(BadFile, Truncated) {
  std::string bytes = conv_model().bytes();
  auto p = write_temp("sluice_truncated.onnx", bytes.substr(0, bytes.size() / 2));
  expect_error([&] { Model::load(p); }, {p, "not a valid ONNX model"});
}

TEST(BadFile, RandomBytesAndText) {
  std::string noise(4096, '\0');
  std::mt19937 rng(7);
  for (auto& c : noise) c = static_cast<char>(rng());
  auto p = write_temp("sluice_noise.onnx", noise);
  expect_error([&] { Model::load(p); }, {p});
  auto t = write_temp("sluice_text.onnx", "this is not a model, just some text\n");
  expect_error([&] { Model::load(t); }, {t, "not a valid ONNX model"});
}

TEST(BadGraph, UnknownOp) {
  OnnxBuilder b;
  b.input("x", {1, 4});
  b.node("FancyOp", {"x"}, {"y"}, "mystery");
  b.output("y");
  expect_error([&] { b.load(); }, {"mystery", "FancyOp"});
}

TEST(BadGraph, MissingInitializer) {
  OnnxBuilder b;
  b.input("x", {1, 3, 8, 8});
  b.node("Conv", {"x", "w_missing"}, {"y"}, "conv1");
  b.output("y");
  // Named with the node that reads it, before the checker (whose message was cut off and
  // blamed the node order).
  expect_error([&] { Session(b.load()); }, {"conv1", "w_missing", "missing initializer"});
}

// Nodes out of order load (ONNX Runtime accepts them; the checker alone does not), and a
// cycle is named; a graph input without a shape takes the shape of what it is given.
TEST(GraphForms, NodesOutOfOrderAndShapelessInput) {
  OnnxBuilder b;
  b.input("x", {2, 3});
  b.node("Relu", {"a"}, {"y"}, "second");
  b.node("Neg", {"x"}, {"a"}, "first");
  b.output("y");
  const Tensor x = Tensor::from_vector<float>({2, 3}, {1, -2, 3, -4, 5, -6});
  const Tensor y = Session(b.load()).run({{"x", x}})["y"];
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(y.data<float>()[i], std::max(0.f, -x.data<float>()[i]));

  OnnxBuilder c;
  c.input("x", {2, 3});
  c.proto().mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->clear_shape();
  c.node("Neg", {"x"}, {"y"}, "neg");
  c.output("y");
  Model m = c.load();
  EXPECT_FALSE(m.inputs()[0].rank_known);
  const Tensor z = Session(m).run({{"x", x}})["y"];
  ASSERT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.data<float>()[1], 2.f);
  // inspect with no shape to plan for: the input is named, with the options that give one
  // (it failed at the first reader, on "got []").
  Session si(m);
  expect_error([&] { si.inspect(false); }, {"input 'x'", "no shape in the model", "--shape x="});
  EXPECT_NE(si.inspect(false, {{"x", {2, 3}}}).find("neg"), std::string::npos);
  // An input nothing reads needs no shape (the review's case).
  OnnxBuilder u;
  u.input("x", {2, 3}).input("unused", {4});
  u.proto().mutable_graph()->mutable_input(1)->mutable_type()->mutable_tensor_type()->clear_shape();
  u.node("Neg", {"x"}, {"y"}, "neg");
  u.output("y");
  EXPECT_NE(Session(u.load()).inspect(false).find("neg"), std::string::npos);
}

TEST(BadGraph, CycleNamesItsNodes) {
  OnnxBuilder b;
  b.input("x", {1, 4});
  b.node("Add", {"x", "b"}, {"a"}, "n1");
  b.node("Relu", {"a"}, {"b"}, "n2");
  b.output("b");
  expect_error([&] { b.load(); }, {"'n1'", "'n2'", "cycle"});
}

TEST(BadGraph, WeightShapeDoesNotFit) {
  expect_error([] { Session(conv_model({4, 5, 3, 3}).load()); }, {"conv1", "weight shape", "[4, 5, 3, 3]"});
}

TEST(BadGraph, InitializerShorterThanDims) {
  OnnxBuilder b = conv_model();
  b.proto().mutable_graph()->mutable_initializer(0)->mutable_float_data()->RemoveLast();
  expect_error([&] { b.load(); }, {"initializer 'w'", "107 elements", "need 108"});
}

// Half-precision weights cast to float (a float16 export run in float) load widened: the answer
// is the float model's with the same (exactly representable) weights. Read as they are, the
// refusal names the value and the type.
TEST(HalfWeights, CastToFloatLoadsWidenedElseARefusalNamesThem) {
  const std::vector<uint16_t> halves = {0x3C00, 0xB800, 0x0001, 0x8000, 0x4248, 0x3600};  // 1, -0.5, 2^-24, -0, 3.140625, 0.375
  const std::vector<float> floats = {1.f, -0.5f, 5.9604644775390625e-8f, -0.f, 3.140625f, 0.375f};
  for (int type : {int{onnx::TensorProto::FLOAT16}, int{onnx::TensorProto::BFLOAT16}}) {
    for (bool raw : {true, false}) {
      OnnxBuilder half, ref;
      for (OnnxBuilder* b : {&half, &ref}) b->input("x", {1, 6, 2, 2});
      auto* t = half.proto().mutable_graph()->add_initializer();
      t->set_name("w16");
      t->set_data_type(type);
      for (int64_t d : {1, 6, 1, 1}) t->add_dims(d);
      std::string bytes;
      for (size_t i = 0; i < halves.size(); ++i) {
        // bfloat16: the float's top 16 bits (the values above are exact in both formats).
        uint32_t fb;
        std::memcpy(&fb, &floats[i], 4);
        const uint16_t h = type == onnx::TensorProto::FLOAT16 ? halves[i] : static_cast<uint16_t>(fb >> 16);
        if (raw)
          bytes.append(reinterpret_cast<const char*>(&h), 2);
        else
          t->add_int32_data(h);
      }
      if (raw) t->set_raw_data(bytes);
      OnnxBuilder::attr_int(half.node("Cast", {"w16"}, {"w"}), "to", onnx::TensorProto::FLOAT);
      half.node("Conv", {"x", "w"}, {"y"});
      ref.init("w", {1, 6, 1, 1}, floats).node("Conv", {"x", "w"}, {"y"});
      for (OnnxBuilder* b : {&half, &ref}) b->output("y");
      Tensor x = random_tensor({1, 6, 2, 2}, 3);
      const Tensor a = Session(half.load()).run({{"x", x}})["y"], e = Session(ref.load()).run({{"x", x}})["y"];
      for (int64_t i = 0; i < e.numel(); ++i) EXPECT_EQ(a.data<float>()[i], e.data<float>()[i]) << type << " " << raw;
    }
  }
  OnnxBuilder direct;
  direct.input("x", {1, 6, 2, 2});
  auto* t = direct.proto().mutable_graph()->add_initializer();
  t->set_name("w16");
  t->set_data_type(onnx::TensorProto::FLOAT16);
  for (int64_t d : {1, 6, 1, 1}) t->add_dims(d);
  for (uint16_t h : halves) t->add_int32_data(h);
  direct.node("Conv", {"x", "w16"}, {"y"});
  direct.output("y");
  expect_error([&] { direct.load(); }, {"initializer 'w16'", "FLOAT16", "not supported", "only cast to float"});
}

// A conv with nothing to compute, or a dilation / padding past any memory, is named as such
// (it was "could not build its kernel ... a Sluice bug"), on the optimised and reference paths.
TEST(BadGraph, DegenerateConvWeightsAndHugeDilationAreNamed) {
  expect_error([] { Session(conv_model({0, 3, 3, 3}).load()); }, {"conv1", "[0, 3, 3, 3]", "no output channels"});
  expect_error([] { Session(conv_model({4, 3, 0, 3}).load()); }, {"conv1", "[4, 3, 0, 3]", "no kernel taps"});
  for (bool optimize : {true, false}) {
    OnnxBuilder b = conv_model({4, 3, 2, 1});
    auto* conv = b.proto().mutable_graph()->mutable_node(0);
    OnnxBuilder::attr_ints(*conv, "dilations", {int64_t{1} << 62, 1});
    OnnxBuilder::attr_ints(*conv, "pads", {int64_t{1} << 62, 0, int64_t{1} << 62, 0});
    expect_error([&] { Session(b.load(), {1, optimize}); }, {"conv1", "dilations [4611686018427387904, 1]", "too large"});
  }
}

// External initializers whose dims add up past the machine's memory are refused from their
// dims, before any file is read.
TEST(BadGraph, InitializersLargerThanMemoryInAllAreRefusedBeforeReading) {
  OnnxBuilder b = conv_model();
  for (const char* name : {"big_a", "big_b"}) {
    auto* t = b.proto().mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : {int64_t{1} << 38, int64_t{4}}) t->add_dims(d);  // 4 TiB each
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* kv = t->add_external_data();
    kv->set_key("location");
    kv->set_value("no_such_file.bin");  // refused before any file is opened
  }
  expect_error([&] { b.load(); }, {"initializers in external data hold", "8192.0 GiB", "more than", "big_a"});
}

// API misuse is an Error that says what is wrong: a Session moved from (it crashed), a density
// outside (0, 1] (taken as the default), inspect with a shape for no input (ignored, then the
// real input was blamed for its dynamic shape).
TEST(ApiMisuse, MovedFromSessionBadDensityAndUnknownInspectNameAreNamed) {
  OnnxBuilder b = conv_model();
  Model m = b.load();
  Session a(m);
  Session moved(std::move(a));
  Tensor x = random_tensor({1, 3, 8, 8});
  expect_error([&] { a.run({{"x", x}}); }, {"moved from"});  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(moved.run({{"x", x}}).count("y"), 1u);
  for (float d : {-0.5f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
    SessionOptions o;
    o.density = d;
    expect_error([&] { Session s(m, o); }, {"SessionOptions.density", "not a density in (0, 1]"});
  }
  expect_error([&] { moved.inspect(false, {{"foo", {1, 3, 8, 8}}}); }, {"'foo'", "not an input of the model", "'x'"});
}

// An empty batch runs (output [0, ...]) and has no per-sample stats (it had one).
TEST(ApiMisuse, EmptyBatchHasNoSamples) {
  OnnxBuilder b;
  b.input("x", {-1, 3, 8, 8}).init_random("w", {4, 3, 3, 3});
  b.node("Conv", {"x", "w"}, {"y"}, "conv1");
  b.output("y");
  Session s(b.load());
  RunStats st;
  const Tensor y = s.run({{"x", Tensor(DType::Float32, {0, 3, 8, 8})}}, &st)["y"];
  EXPECT_EQ(y.shape(), (Shape{0, 4, 6, 6}));
  EXPECT_TRUE(st.samples.empty());
  EXPECT_EQ(st.executed_macs, 0);
  s.run({{"x", random_tensor({2, 3, 8, 8})}}, &st);
  EXPECT_EQ(st.samples.size(), 2u);
}

// A tensor larger than the machine is an Error, not std::bad_alloc (or the out-of-memory
// killer once its zero fill touches it); 7.8e11 floats pass the 2^40-element bound.
TEST(ApiMisuse, TensorLargerThanMemoryIsAnError) {
  if (runtime::machine_bytes() <= 0) GTEST_SKIP() << "the system does not say how much memory it has";
  expect_error([] { Tensor(DType::Float32, {1000000000, 1, 28, 28}); }, {"[1000000000, 1, 28, 28]", "more than"});
}

// Timing a conv's candidate kernels at load needs its input and output once per candidate:
// beyond the machine that is refused by name (a batch of 200,000 images was killed for memory
// there, before the arena's own check). A chain of views and in-place ops on a value over
// half the machine is not refused: its arena holds the value once.
TEST(ApiMisuse, KernelTimingLargerThanMemoryIsRefusedByName) {
  const double have = runtime::machine_bytes();
  if (have <= 0) GTEST_SKIP() << "the system does not say how much memory it has";
  OnnxBuilder b;
  b.input("x", {-1, 20, 8, 8}).init_random("w", {20, 20, 3, 3});
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"y"}, "thin"), "pads", {1, 1, 1, 1});
  b.output("y");
  Session s(b.load());
  const auto n = static_cast<int64_t>(0.6 * have / (20 * 64 * 4)) + 1;  // x and y each 0.6 of the machine
  expect_error([&] { s.inspect(false, {{"x", {n, 20, 8, 8}}}); }, {"thin", "timing its", "of memory available now"});
  OnnxBuilder v;
  v.input("x", {-1, 1024}).init_i64("shape", {2}, {-1, 512});
  v.node("Reshape", {"x", "shape"}, {"r"});
  v.node("Relu", {"r"}, {"a"});
  OnnxBuilder::attr_int(v.node("ReduceSum", {"a"}, {"y"}), "keepdims", 0);
  v.output("y");
  Session sv(v.load());
  const auto nv = static_cast<int64_t>(0.6 * have / 4096) + 1;
  EXPECT_NE(sv.inspect(false, {{"x", {nv, 1024}}}).find("Relu"), std::string::npos);
}

// One Session fed many shapes keeps a bounded number of plans (each holds its arenas: 120
// image sizes grew one from 22 MB to 1.9 GB); a shape whose plan was dropped runs again, the same.
// (oneDNN for the conv in every plan: a plan made again times direct against oneDNN again, and
// on a loaded machine once took the other, 1e-7 apart.)
TEST(ApiMisuse, ManyShapesKeepRunningAfterOldPlansGo) {
  PreferKernels onednn("onednn");
  OnnxBuilder b;
  b.input("x", {-1, 3, 8, 8}).init_random("w", {4, 3, 3, 3});
  b.node("Conv", {"x", "w"}, {"y"}, "conv1");
  b.output("y");
  Model m = b.load();
  Session s(m), fresh(m);
  const Tensor x1 = random_tensor({1, 3, 8, 8}, 5);
  const Tensor first = s.run({{"x", x1}})["y"];
  for (int64_t n = 2; n < 14; ++n) EXPECT_EQ(s.run({{"x", random_tensor({n, 3, 8, 8}, 6)}})["y"].shape()[0], n);
  EXPECT_EQ(normalized_error(s.run({{"x", x1}})["y"], first), 0.0);
  EXPECT_EQ(normalized_error(fresh.run({{"x", x1}})["y"], first), 0.0);
}

TEST(BadGraph, InitializerWithANegativeDimensionShowsItAsWritten) {
  OnnxBuilder b = conv_model();
  b.proto().mutable_graph()->mutable_initializer(0)->set_dims(0, -3);
  expect_error([&] { b.load(); }, {"initializer 'w'", "negative dimension", "[-3, 3, 3, 3]"});
}

TEST(MemoryLimit, HugeSizesReadInGiBWithoutBeingCutOff) {
  EXPECT_EQ(runtime::gib(1.5 * 1024 * 1024 * 1024), "1.5 GiB");
  EXPECT_EQ(runtime::gib(std::ldexp(1.0, 127)), "1.58e+29 GiB");
}

// ONNX 1.12's shape inference reads a Constant's raw_data without checking its size, and
// divides by strides: both crashed Sluice before it checked them first (a fuzzer's finds).
TEST(BadGraph, ConstantRawDataShorterThanDims) {
  OnnxBuilder b;
  b.input("x", {1, 4});
  auto& c = b.node("Constant", {}, {"k"}, "short_const");
  auto* a = c.add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(onnx::TensorProto::INT64);
  a->mutable_t()->add_dims(1);
  a->mutable_t()->set_raw_data(std::string(7, '\0'));
  b.node("Add", {"x", "k"}, {"y"}, "add");
  b.output("y");
  expect_error([&] { b.load(); }, {"short_const", "raw_data has 7 bytes", "need 8"});
}

// A Constant with two value attributes and a conv with auto_pad and contradicting pads are
// invalid (ONNX Runtime refuses the conv; the Constant it reads one way, Sluice read the other):
// both are refused by name, not run on one reading.
TEST(BadGraph, ConstantWithTwoValuesAndAutoPadWithPadsAreRefused) {
  OnnxBuilder b;
  b.input("x", {3});
  auto& c = b.node("Constant", {}, {"k"}, "two_values");
  OnnxBuilder::attr_float(c, "value_float", 2.5f);
  auto* a = c.add_attribute();
  a->set_name("value_floats");
  a->set_type(onnx::AttributeProto::FLOATS);
  for (float v : {1.f, 2.f, 3.f}) a->add_floats(v);
  b.node("Add", {"x", "k"}, {"y"}, "add");
  b.output("y");
  expect_error([&] { b.load(); }, {"two_values", "'value_float'", "'value_floats'", "exactly one"});

  OnnxBuilder pads = conv_model();
  OnnxBuilder::attr_str(*pads.proto().mutable_graph()->mutable_node(0), "auto_pad", "VALID");
  OnnxBuilder::attr_ints(*pads.proto().mutable_graph()->mutable_node(0), "pads", {1, 1, 1, 1});
  expect_error([&] { pads.load(); }, {"conv1", "auto_pad 'VALID'", "'pads'"});
  OnnxBuilder same = conv_model();
  OnnxBuilder::attr_str(*same.proto().mutable_graph()->mutable_node(0), "auto_pad", "SAME_UPPER");
  OnnxBuilder::attr_ints(*same.proto().mutable_graph()->mutable_node(0), "pads", {0, 0, 0, 0});
  expect_error([&] { same.load(); }, {"conv1", "auto_pad 'SAME_UPPER'"});
  // A pool runs with auto_pad's padding, as ONNX Runtime does (a review found it refused).
  OnnxBuilder pool;
  pool.input("x", {1, 3, 8, 8});
  auto& mp = pool.node("MaxPool", {"x"}, {"y"}, "pool");
  OnnxBuilder::attr_ints(mp, "kernel_shape", {3, 3});
  OnnxBuilder::attr_str(mp, "auto_pad", "SAME_UPPER");
  OnnxBuilder::attr_ints(mp, "pads", {0, 0, 0, 0});
  pool.output("y");
  Session ps(pool.load());
  EXPECT_EQ(ps.run({{"x", random_tensor({1, 3, 8, 8})}}).at("y").shape(), (Shape{1, 3, 8, 8}));
  // VALID with zero pads says the same thing twice: it loads, as 6x6.
  OnnxBuilder valid = conv_model();
  OnnxBuilder::attr_str(*valid.proto().mutable_graph()->mutable_node(0), "auto_pad", "VALID");
  OnnxBuilder::attr_ints(*valid.proto().mutable_graph()->mutable_node(0), "pads", {0, 0, 0, 0});
  Session s(valid.load());
  EXPECT_EQ(s.run({{"x", random_tensor({1, 3, 8, 8})}}).at("y").shape(), (Shape{1, 4, 6, 6}));
}

// Sizes near 2^62 are refused before arithmetic on them overflows: a ConvTranspose's pads (the
// message gave a negative entry count, computed with a signed overflow) and a MaxPool's
// kernel_shape (it blamed the dilations or pads, not kernel_shape).
TEST(BadGraph, HugePadsAndKernelAreNamedBeforeTheyOverflow) {
  const int64_t huge = int64_t{1} << 62;
  OnnxBuilder t;
  t.input("x", {1, 1, 4, 4}).init_random("w", {1, 1, 2, 2});
  OnnxBuilder::attr_ints(t.node("ConvTranspose", {"x", "w"}, {"y"}, "deconv"), "pads", {huge, 0, huge, 0});
  t.output("y");
  expect_error([&] { Session s(t.load()); }, {"deconv", "pads [4611686018427387904, 0, 4611686018427387904, 0]", "too large"});
  OnnxBuilder m;
  m.input("x", {1, 1, 4, 4});
  OnnxBuilder::attr_ints(m.node("MaxPool", {"x"}, {"y"}, "pool"), "kernel_shape", {huge, 2});
  m.output("y");
  expect_error([&] { Session s(m.load()); }, {"pool", "kernel_shape [4611686018427387904, 2]", "too large"});
}

// Shapes with a 0 are empty whatever their other dimensions (the product was checked left to
// right, so [2^20, 2^21, 0] was "too large" where [0, 2^20, 2^21] was empty); a value_info that
// contradicts the inferred shape is a stale annotation, run past as ONNX Runtime does; a shape
// input of more than 64 entries says why it cannot be planned for (probe finds).
TEST(BadGraph, EmptyShapesStaleValueInfoAndLongShapeInputs) {
  EXPECT_EQ(Tensor(DType::Float32, {int64_t{1} << 20, int64_t{1} << 21, 0}).numel(), 0);
  OnnxBuilder r(14);
  r.input("x", {0, 4}).init_i64("s", {3}, {int64_t{1} << 20, int64_t{1} << 21, 0});
  OnnxBuilder::attr_int(r.node("Reshape", {"x", "s"}, {"y"}, "reshape"), "allowzero", 1);
  r.output("y");
  Session rs(r.load());
  EXPECT_EQ(rs.run({{"x", Tensor(DType::Float32, {0, 4})}}).at("y").shape(),
            (Shape{int64_t{1} << 20, int64_t{1} << 21, 0}));

  OnnxBuilder v;
  v.input("x", {2, 4});
  v.node("Relu", {"x"}, {"t"}, "relu");
  v.node("Neg", {"t"}, {"y"}, "neg");
  v.output("y");
  v.annotate("t", {7, 7, 7});
  Session vs(v.load());
  EXPECT_EQ(vs.run({{"x", random_tensor({2, 4})}}).at("y").shape(), (Shape{2, 4}));

  OnnxBuilder l;
  l.input("x", {2, 3, 4}).input("s", {65}, onnx::TensorProto::INT64);
  l.node("Reshape", {"x", "s"}, {"y"}, "reshape");
  l.output("y");
  Session ls(l.load());
  std::vector<int64_t> dims(65, 1);
  dims.back() = 24;
  expect_error([&] { ls.run({{"x", random_tensor({2, 3, 4})}, {"s", Tensor::from_vector<int64_t>({65}, dims)}}); },
               {"reshape", "'s' of more than 64 entries", "make it a constant"});
}

TEST(BadGraph, ZeroStrideOrDilation) {
  for (const char* attr : {"strides", "dilations"}) {
    OnnxBuilder b = conv_model();
    OnnxBuilder::attr_ints(*b.proto().mutable_graph()->mutable_node(0), attr, {1, 0});
    expect_error([&] { b.load(); }, {"conv1", attr, ">= 1"});
  }
  OnnxBuilder b;
  b.input("x", {1, 3, 8, 8});
  OnnxBuilder::attr_ints(b.node("MaxPool", {"x"}, {"y"}, "pool"), "kernel_shape", {2, 2});
  OnnxBuilder::attr_ints(*b.proto().mutable_graph()->mutable_node(0), "strides", {0, 2});
  b.output("y");
  expect_error([&] { b.load(); }, {"pool", "strides", ">= 1"});
}

// A stride far past the input (2^31) is valid ONNX: one window. It overflowed oneDNN's int
// descriptors ("could not create a descriptor ... a Sluice bug"); it now runs, with the
// reference's answer, in a conv and in a ceil-mode MaxPool.
TEST(BadGraph, HugeStrideRunsAsOneWindow) {
  const int64_t huge = int64_t{1} << 31;
  OnnxBuilder b = conv_model();
  OnnxBuilder::attr_ints(*b.proto().mutable_graph()->mutable_node(0), "strides", {huge, 1});
  OnnxBuilder p;
  p.input("x", {1, 3, 8, 8});
  auto& pool = p.node("MaxPool", {"x"}, {"y"}, "pool");
  OnnxBuilder::attr_ints(pool, "kernel_shape", {3, 3});
  OnnxBuilder::attr_ints(pool, "strides", {huge, 2});
  OnnxBuilder::attr_int(pool, "ceil_mode", 1);
  p.output("y");
  const Tensor x = random_tensor({1, 3, 8, 8});
  for (const OnnxBuilder* m : {&b, &p}) {
    const Tensor fast = Session(m->load(), {1, true}).run({{"x", x}})["y"];
    const Tensor ref = Session(m->load(), {1, false}).run({{"x", x}})["y"];
    EXPECT_EQ(fast.shape()[2], 1);
    EXPECT_EQ(fast.shape(), ref.shape());
    EXPECT_LT(normalized_error(fast, ref), 1e-6);
  }
}

// A conv or pool fed a tensor of the wrong rank (here 2-D from a Flatten) crashed inside ONNX's
// shape inference (SIGSEGV, a fuzzer's find); it is refused by name before that runs.
TEST(BadGraph, ConvOrPoolInputOfTheWrongRank) {
  for (const char* op : {"Conv", "MaxPool"}) {
    OnnxBuilder b;
    b.input("x", {1, 3, 8, 8}).init_random("w", {4, 3, 3, 3});
    OnnxBuilder::attr_int(b.node("Flatten", {"x"}, {"f"}), "axis", 1);
    auto& n = std::string(op) == "Conv" ? b.node("Conv", {"f", "w"}, {"y"}, "late") : b.node("MaxPool", {"f"}, {"y"}, "late");
    if (std::string(op) == "MaxPool") OnnxBuilder::attr_ints(n, "kernel_shape", {2, 2});
    b.output("y");
    expect_error([&] { b.load(); }, {"late", "'f' has rank 2", std::string(op) == "Conv" ? "weight 'w' has rank 4" : "kernel_shape has 2 dims"});
  }
}

// The same behind another conv or pool (the rank check saw only values before the first one:
// a conv's rank-5 weight on a conv's output crashed inside ONNX's inference, a fuzzer's find).
TEST(BadGraph, ConvWeightOfTheWrongRankBehindAConvOrPool) {
  for (const char* first : {"Conv", "MaxPool"}) {
    OnnxBuilder b;
    b.input("x", {1, 4, 6, 6}).init_random("w1", {4, 4, 3, 3}).init_random("w", {4, 4, 3, 3, 1});
    auto& n = std::string(first) == "Conv" ? b.node("Conv", {"x", "w1"}, {"a"}, "first") : b.node("MaxPool", {"x"}, {"a"}, "first");
    if (std::string(first) == "MaxPool") OnnxBuilder::attr_ints(n, "kernel_shape", {2, 2});
    b.node("Relu", {"a"}, {"r"});
    b.node("Conv", {"r", "w"}, {"y"}, "second");
    b.output("y");
    expect_error([&] { b.load(); }, {"second", "'r' has rank 4", "weight 'w' has rank 5"});
  }
}

// Dims that do not match the data are refused before anything is allocated, and a value
// larger than the machine's memory is refused by name (a fuzzer found both as std::bad_alloc).
TEST(BadGraph, InitializerDimsHugeDataSmall) {
  OnnxBuilder b = conv_model();
  b.proto().mutable_graph()->mutable_initializer(0)->set_dims(0, int64_t{1} << 31);
  expect_error([&] { b.load(); }, {"initializer 'w'", "108 elements", "need 57982058496"});
}

TEST(BadGraph, ValueLargerThanMemory) {
  OnnxBuilder b;
  b.input("x", {1, 3, 8, 8}).init_i64("pads", {8}, {0, 0, int64_t{1} << 31, 0, 0, 0, 0, 0});
  b.node("Pad", {"x", "pads"}, {"y"}, "pad");
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"pad", "GiB", "more than"});
}

// A pool padded by as much as its kernel has windows wholly in the padding, which have no
// answer: refused by name, as ONNX Runtime and PyTorch refuse it (Sluice ran it, giving -inf
// on the fast kernels and -FLT_MAX on the reference ones).
TEST(BadGraph, PoolPadNotSmallerThanKernel) {
  for (const char* op : {"MaxPool", "AveragePool"})
    for (const std::vector<int64_t>& pads : {std::vector<int64_t>{2, 0, 0, 0}, std::vector<int64_t>{0, 0, 0, 3}}) {
      OnnxBuilder b;
      b.input("x", {1, 3, 8, 8});
      auto& n = b.node(op, {"x"}, {"y"}, "pool");
      OnnxBuilder::attr_ints(n, "kernel_shape", {2, 3});
      OnnxBuilder::attr_ints(n, "pads", pads);
      b.output("y");
      expect_error([&] { Session(b.load()); }, {"pool", "pads " + ops::ints_str(pads), "smaller than kernel_shape [2, 3]"});
    }
  // One less than the kernel on every side runs.
  OnnxBuilder b;
  b.input("x", {1, 3, 8, 8});
  auto& n = b.node("MaxPool", {"x"}, {"y"}, "pool");
  OnnxBuilder::attr_ints(n, "kernel_shape", {2, 3});
  OnnxBuilder::attr_ints(n, "pads", {1, 2, 1, 2});
  b.output("y");
  EXPECT_EQ(Session(b.load()).run({{"x", random_tensor({1, 3, 8, 8})}})["y"].shape(), (Shape{1, 3, 9, 10}));
}

// A 0/1 attribute with another value: ONNX Runtime reads largest=-1 as "smallest", a
// `!= 0` reading as "largest"; neither is the file's meaning, so it is refused.
TEST(BadGraph, FlagAttributeNotZeroOrOne) {
  OnnxBuilder b;
  b.input("x", {1, 8}).init_i64("k", {1}, {3});
  auto& n = b.node("TopK", {"x", "k"}, {"v", "i"}, "topk");
  auto* a = n.add_attribute();
  a->set_name("largest");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(-1);
  b.output("v");
  expect_error([&] { Session(b.load()); }, {"topk", "'largest' is -1", "0 or 1"});
}

// External data must lie inside the model's folder: a location with "..", or a symlink that
// resolves elsewhere (a fuzzer's find: the weights were read from a system library), is
// refused; the same data really inside the folder loads.
TEST(BadFile, ExternalDataOutsideTheModelFolder) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "sluice_ext_test", outside = fs::temp_directory_path() / "sluice_ext_w.bin";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::vector<float> w(4 * 3 * 3 * 3, 0.5f);
  std::ofstream(outside, std::ios::binary).write(reinterpret_cast<const char*>(w.data()), static_cast<std::streamsize>(w.size() * 4));
  auto model_with = [&](const std::string& location) {
    OnnxBuilder b = conv_model();
    auto* init = b.proto().mutable_graph()->mutable_initializer(0);
    init->clear_float_data();
    init->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* kv = init->add_external_data();
    kv->set_key("location");
    kv->set_value(location);
    const std::string path = (dir / ("m_" + std::to_string(location.size()) + ".onnx")).string();
    std::ofstream(path, std::ios::binary) << b.bytes();
    return path;
  };
  fs::create_symlink(outside, dir / "link.bin");
  expect_error([&] { Model::load(model_with("link.bin")); }, {"link.bin", "outside the model's folder"});
  expect_error([&] { Model::load(model_with("../sluice_ext_w.bin")); }, {"relative path inside the model's folder"});
  fs::copy_file(outside, dir / "w.bin");
  EXPECT_NO_THROW(Model::load(model_with("w.bin")));
  fs::remove_all(dir);
  fs::remove(outside);
}

TEST(BadGraph, ReshapeToHugeDims) {
  OnnxBuilder b;
  b.input("x", {1, 4}).init_i64("shape", {2}, {int64_t{1} << 31, int64_t{1} << 31});
  b.node("Reshape", {"x", "shape"}, {"y"}, "huge");
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"huge"});
}

TEST(BadGraph, NegativePads) {
  OnnxBuilder b;
  b.input("x", {1, 3, 8, 8}).init_random("w", {4, 3, 3, 3});
  auto& n = b.node("Conv", {"x", "w"}, {"y"}, "padded");
  OnnxBuilder::attr_ints(n, "pads", {-1, 0, 0, 0});
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"padded", "pads"});
}

// 1-D window attributes on a 4-D input: said as such (the conv was lifted to 2-D first, and the
// message then showed a 5-D input the model never had; found by a probe).
TEST(BadGraph, OneDimensionalAttributesOnAFourDimensionalInput) {
  for (const std::string attr : {"pads", "strides"}) {
    OnnxBuilder b;
    b.input("x", {1, 3, 8, 8}).init_random("w", {4, 3, 3, 3});
    OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"y"}, "mixed"), attr, attr == "pads" ? Shape{1, 1} : Shape{2});
    b.output("y");
    expect_error([&] { Session(b.load()); },
                 {"mixed", "are those of a 1-D window, but its input is 4-D [1, 3, 8, 8]", "4 pads"});
  }
}

// The ONNX checker's refusals name the node its context gives (its first line alone, "Unrecognized
// attribute: padc for operator Conv", did not say which conv; found by a probe).
TEST(BadGraph, CheckerRefusalNamesTheNode) {
  for (const std::string name : {"myconv", ""}) {
    OnnxBuilder b;
    b.input("x", {1, 3, 8, 8}).init_random("w", {4, 3, 3, 3});
    auto& conv = b.node("Conv", {"x", "w"}, {"y"}, name);
    if (name.empty()) conv.clear_name();  // (the builder names every node)
    OnnxBuilder::attr_ints(conv, "padc", {1, 1, 1, 1});
    b.output("y", {1, 4, 6, 6});
    expect_error([&] { Session(b.load()); },
                 {"the ONNX checker rejects the model: Unrecognized attribute: padc for operator Conv",
                  name.empty() ? "(a Conv node without a name)" : "(node 'myconv', Conv)"});
  }
}

// BatchNormalization spatial=0 (opsets 7-8): refused by name, whichever shape its statistics
// have (with [C] ones it used to run as spatial=1).
TEST(BadGraph, BatchNormSpatialZero) {
  for (const Shape& stats : {Shape{3}, Shape{3, 5, 7}}) {
    OnnxBuilder b(8);
    b.input("x", {2, 3, 5, 7});
    for (const char* n : {"s", "b", "m", "v"}) b.init_random(n, stats);
    OnnxBuilder::attr_int(b.node("BatchNormalization", {"x", "s", "b", "m", "v"}, {"y"}, "bn"), "spatial", 0);
    b.output("y");
    expect_error([&] { Session(b.load()); }, {"bn", "spatial=0", "not supported"});
  }
}

// Lists of values print negatives as they are ("?" is the notation of a dynamic dimension):
// a Pad that crops more than the input has, a Reshape target with two -1.
TEST(BadGraph, NegativeValuesInMessagesAsWritten) {
  OnnxBuilder b;
  b.input("x", {1, 2, 3, 3}).init_i64("pads", {8}, {0, 0, 0, -4, 0, 0, 0, 0});
  b.node("Pad", {"x", "pads"}, {"y"}, "overcrop");
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"overcrop", "pads [0, 0, 0, -4, 0, 0, 0, 0] crop more than the input [1, 2, 3, 3]"});
  // Pads whose sum overflows int64 (INT64_MIN on both sides wrapped to 0: a reflect pad never
  // ended, constant and edge pads gave zeros or copies), and pads past 2^63 (found by a probe).
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  for (const char* mode : {"reflect", "constant", "edge"}) {
    OnnxBuilder o;
    o.input("x", {1, 3, 4, 4}).init_i64("pads", {8}, {0, 0, 0, kMin, 0, 0, 0, kMin});
    OnnxBuilder::attr_str(o.node("Pad", {"x", "pads"}, {"y"}, "wraps"), "mode", mode);
    o.output("y");
    expect_error([&] { Session(o.load()); }, {"wraps", "crop more than the input [1, 3, 4, 4]"});
  }
  OnnxBuilder h;
  h.input("x", {1, 3, 4, 4}).init_i64("pads", {8}, {0, 0, 0, int64_t{1} << 62, 0, 0, 0, int64_t{1} << 62});
  h.node("Pad", {"x", "pads"}, {"y"}, "huge");
  h.output("y");
  expect_error([&] { Session(h.load()); }, {"huge", "are too large: axis 3", "more than 2^63 entries"});
  OnnxBuilder r;
  r.input("x", {2, 6}).init_i64("shape", {2}, {-1, -1});
  r.node("Reshape", {"x", "shape"}, {"y"}, "twice");
  r.output("y");
  expect_error([&] { Session(r.load()); }, {"twice", "shape [-1, -1] has more than one -1"});
}

TEST(BadGraph, OpsetTooNew) {
  OnnxBuilder b(22);
  b.input("x", {1, 4});
  b.node("Relu", {"x"}, {"y"});
  b.output("y");
  expect_error([&] { b.load(); }, {"opset 22", "newer than Sluice supports"});
}

TEST(BadGraph, KernelLargerThanInput) {
  OnnxBuilder b;
  b.input("x", {1, 3, 2, 2}).init_random("w", {4, 3, 5, 5});
  b.node("Conv", {"x", "w"}, {"y"}, "bigk");
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"bigk", "larger than the padded input"});
}

TEST(BadRun, WrongInputShapeDtypeName) {
  Session s(conv_model().load());
  expect_error([&] { s.run({{"x", random_tensor({1, 3, 9, 8})}}); }, {"input 'x'", "[1, 3, 8, 8]", "[1, 3, 9, 8]"});
  expect_error([&] { s.run({{"x", Tensor(DType::Int64, {1, 3, 8, 8})}}); }, {"input 'x'", "float32", "int64"});
  expect_error([&] { s.run({}); }, {"input 'x'", "not given"});
  expect_error([&] { s.run({{"x", random_tensor({1, 3, 8, 8})}, {"z", random_tensor({1})}}); }, {"no input named 'z'"});
  // A wrong name alone: the unknown name is what is said, with the model's inputs.
  expect_error([&] { s.run({{"input", random_tensor({1, 3, 8, 8})}}); }, {"no input named 'input'", "(inputs: 'x')"});
}

TEST(BadRun, TopKLargerThanAxis) {
  OnnxBuilder b;
  b.input("g", {1, 8}).init_i64("k", {1}, {9});
  b.node("TopK", {"g", "k"}, {"v", "i"}, "topk");
  b.output("v").output("i", {}, onnx::TensorProto::INT64);
  expect_error([&] { Session(b.load()); }, {"topk"});
}

// A NaN weight in a conv followed by a Relu: ONNX Runtime's output is NaN in that channel; the
// fast kernels' fused Relu maps NaN to 0 (as oneDNN's post-ops), which gave a finite answer.
// Such a model runs on the reference kernels, and the stats name the conv.
TEST(BadRun, NonFiniteWeightsRunOnTheReferenceKernels) {
  std::vector<float> w(4 * 3 * 3 * 3, 0.1f);
  w[2 * 27 + 5] = std::numeric_limits<float>::quiet_NaN();  // output channel 2
  OnnxBuilder b;
  b.input("x", {1, 3, 8, 8}).init("w", {4, 3, 3, 3}, w);
  OnnxBuilder::attr_ints(b.node("Conv", {"x", "w"}, {"c"}, "conv1"), "pads", {1, 1, 1, 1});
  b.node("Relu", {"c"}, {"y"});
  b.output("y");
  Session s(b.load());
  RunStats st;
  auto out = s.run({{"x", random_tensor({1, 3, 8, 8}, 5)}}, &st);
  EXPECT_EQ(st.nonfinite_weights, "conv1");
  const float* y = out["y"].data<float>();
  int nan_in_2 = 0, nan_elsewhere = 0;
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 64; ++i) (c == 2 ? nan_in_2 : nan_elsewhere) += std::isnan(y[c * 64 + i]);
  EXPECT_EQ(nan_in_2, 56);  // the NaN tap (row 1, column 2) reads the padding in the last column: skipped
  EXPECT_EQ(nan_elsewhere, 0);

  // A NaN that only BatchNorm folding puts into the conv's weights and bias (found by a review:
  // the check read the model's weights, before folding): seen too.
  OnnxBuilder bn;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  bn.input("x", {1, 3, 8, 8}).init_random("w", {4, 3, 3, 3});
  bn.init("s", {4}, {1.f, nan, 1.f, 1.f}).init("b", {4}, {0.f, 0.f, 0.f, 0.f}).init("m", {4}, {0.f, 0.f, 0.f, 0.f});
  bn.init("v", {4}, {1.f, 1.f, 1.f, 1.f});
  OnnxBuilder::attr_ints(bn.node("Conv", {"x", "w"}, {"c"}, "conv1"), "pads", {1, 1, 1, 1});
  bn.node("BatchNormalization", {"c", "s", "b", "m", "v"}, {"n"}, "bn1");
  bn.node("Relu", {"n"}, {"y"});
  bn.output("y");
  Session sb(bn.load());
  RunStats sbs;
  auto ob = sb.run({{"x", random_tensor({1, 3, 8, 8}, 5)}}, &sbs);
  EXPECT_FALSE(sbs.nonfinite_weights.empty());
  int nan_bn = 0;
  for (int i = 0; i < 4 * 64; ++i) nan_bn += std::isnan(ob["y"].data<float>()[i]);
  EXPECT_EQ(nan_bn, 64);  // channel 1, as ONNX Runtime

  // A -inf bias (a class masked out of a linear head) is not a broken weight: -inf stays -inf
  // in every kernel, and the run keeps the fast kernels.
  OnnxBuilder h;
  h.input("x", {2, 6}).init_random("w", {6, 4}).init("b", {4}, {0.f, -INFINITY, 0.5f, 0.f});
  h.node("Gemm", {"x", "w", "b"}, {"y"}, "fc");
  h.output("y");
  Session sh(h.load());
  RunStats shs;
  auto oh = sh.run({{"x", random_tensor({2, 6}, 6)}}, &shs);
  EXPECT_TRUE(shs.nonfinite_weights.empty()) << shs.nonfinite_weights;
  EXPECT_EQ(oh["y"].data<float>()[1], -INFINITY);
}

// NaN among the values: it ranks above every number (numpy's and torch's order), first when
// taking the largest and last when taking the smallest, and the rest stay sorted. Compared as
// numbers it broke the sort (a probe got 1.44, NaN, 1.29, ... for the 5 largest).
TEST(BadRun, TopKRanksNaNAboveEveryNumber) {
  for (int64_t largest : {1, 0}) {
    OnnxBuilder b;
    b.input("g", {1, 8}).init_i64("k", {1}, {5});
    OnnxBuilder::attr_int(b.node("TopK", {"g", "k"}, {"v", "i"}, "topk"), "largest", largest);
    b.output("v").output("i", {}, onnx::TensorProto::INT64);
    Session s(b.load());
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto out = s.run({{"g", Tensor::from_vector<float>({1, 8}, {0.5f, nan, 2.f, -1.f, nan, 3.f, 0.f, 1.f})}});
    const float* v = out["v"].data<float>();
    const int64_t* i = out["i"].data<int64_t>();
    if (largest) {
      EXPECT_TRUE(std::isnan(v[0]) && std::isnan(v[1]));
      EXPECT_EQ(std::vector<int64_t>(i, i + 5), (std::vector<int64_t>{1, 4, 5, 2, 7}));
      EXPECT_EQ(std::vector<float>(v + 2, v + 5), (std::vector<float>{3.f, 2.f, 1.f}));
    } else {
      EXPECT_EQ(std::vector<int64_t>(i, i + 5), (std::vector<int64_t>{3, 6, 0, 7, 2}));
      EXPECT_EQ(std::vector<float>(v, v + 5), (std::vector<float>{-1.f, 0.f, 0.5f, 1.f, 2.f}));
    }
  }
}

// K as a scalar: the spec's K is 1-D of one value, and ONNX Runtime refuses the file (a probe
// found Sluice ran it).
TEST(BadGraph, TopKScalarK) {
  OnnxBuilder b;
  b.input("g", {1, 8}).init_i64("k", {}, {3});
  b.node("TopK", {"g", "k"}, {"v", "i"}, "topk");
  b.output("v").output("i", {}, onnx::TensorProto::INT64);
  expect_error([&] { Session(b.load()); }, {"topk", "'k'", "1-D", "shape []"});
}

// ScatterND (PyTorch's slice assignment): indices past the axis, updates of the wrong shape, an
// unknown reduction.
TEST(BadRun, ScatterNDIndexOutOfRange) {
  OnnxBuilder b(16);
  b.input("x", {2, 3}).input("u", {1, 3}).init_i64("idx", {1, 1}, {2});
  b.node("ScatterND", {"x", "idx", "u"}, {"y"}, "assign");
  b.output("y");
  Session s(b.load());
  expect_error([&] { s.run({{"x", random_tensor({2, 3})}, {"u", random_tensor({1, 3})}}); },
               {"assign", "index 2", "axis 0 of size 2"});
}

TEST(BadGraph, ScatterNDInt32IndicesAndRangeOfVectors) {
  OnnxBuilder b(13);
  b.input("x", {2, 3}).input("u", {1, 3});
  auto* t = b.proto().mutable_graph()->add_initializer();  // int32 indices: ONNX's ScatterND takes int64 only
  t->set_name("idx");
  t->set_data_type(onnx::TensorProto::INT32);
  t->add_dims(1);
  t->add_dims(1);
  t->add_int32_data(0);
  b.node("ScatterND", {"x", "idx", "u"}, {"y"}, "assign");
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"assign", "indices must be int64"});
  OnnxBuilder r(13);
  r.init_i64("s", {1}, {0}).init_i64("l", {1}, {4}).init_i64("d", {1}, {1});  // [1], not scalars
  r.node("Range", {"s", "l", "d"}, {"y"}, "range");
  r.output("y", {}, onnx::TensorProto::INT64);
  expect_error([&] { Session(r.load()).inspect(); }, {"range", "must be a scalar", "[1]"});
}

TEST(BadGraph, ScatterNDUpdatesShapeOrReduction) {
  OnnxBuilder b(16);
  b.input("x", {2, 3}).input("u", {1, 2}).init_i64("idx", {1, 1}, {0});
  b.node("ScatterND", {"x", "idx", "u"}, {"y"}, "assign");
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"assign", "updates have shape [1, 2]", "need [1, 3]"});
  OnnxBuilder c(18);
  c.input("x", {2, 3}).input("u", {1, 3}).init_i64("idx", {1, 1}, {0});
  OnnxBuilder::attr_str(c.node("ScatterND", {"x", "idx", "u"}, {"y"}, "assign"), "reduction", "avg");
  c.output("y");
  expect_error([&] { c.load(); }, {"assign", "reduction 'avg'"});
}

TEST(BadGraph, LayerNormScaleThatDoesNotBroadcast) {
  OnnxBuilder b(17);
  b.input("x", {1, 4, 4, 6}).init("scale", {5}, std::vector<float>(5, 1.f));
  OnnxBuilder::attr_int(b.node("LayerNormalization", {"x", "scale"}, {"y"}, "ln"), "axis", -1);
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"ln", "'scale'", "[5]", "[6]"});
}

TEST(BadGraph, LayerNormAxisOutOfRange) {
  OnnxBuilder b(17);
  b.input("x", {1, 4}).init("scale", {4}, std::vector<float>(4, 1.f));
  OnnxBuilder::attr_int(b.node("LayerNormalization", {"x", "scale"}, {"y"}, "ln"), "axis", 3);
  b.output("y");
  expect_error([&] { Session(b.load()); }, {"ln", "axis 3", "out of range"});
}

TEST(BadGraph, LogicalOpOnFloats) {
  OnnxBuilder b;
  b.input("a", {2, 3}).input("c", {2, 3});
  b.node("And", {"a", "c"}, {"y"}, "both");
  b.output("y", {}, onnx::TensorProto::BOOL);
  expect_error([&] { Session(b.load()); }, {"both", "float32", "expected bool"});
}

// A float64 input where an op runs float32 says how to get a float32 model (the sparse probe:
// a float64 Gemm was refused without a way out).
TEST(BadGraph, Float64WhereFloat32IsNeededSaysHowToFix) {
  OnnxBuilder b;
  b.input("a", {2, 3}, onnx::TensorProto::DOUBLE).init_random("w", {4, 3});
  auto& gemm = b.node("Gemm", {"a", "w"}, {"y"}, "head");
  OnnxBuilder::attr_int(gemm, "transB", 1);
  b.output("y", {}, onnx::TensorProto::DOUBLE);
  expect_error([&] { Session(b.load()); }, {"head", "'a'", "float64", "expected float32", "model.float()", "Cast"});
  // A and B float64 (which runs), C float32: C is the one named (a probe saw B named).
  OnnxBuilder d;
  d.input("a", {2, 3}, onnx::TensorProto::DOUBLE).init_f64("w", {4, 3}, std::vector<double>(12, 0.5));
  d.init("c", {4}, {1.f, 2.f, 3.f, 4.f});
  OnnxBuilder::attr_int(d.node("Gemm", {"a", "w", "c"}, {"y"}, "head"), "transB", 1);
  d.output("y", {}, onnx::TensorProto::DOUBLE);
  expect_error([&] { Session(d.load()); }, {"head", "input 2 ('c')", "float32, expected float64", "Cast"});
  // Ops that check their own input (a conv, the first op a float64 image meets) say it too.
  OnnxBuilder c;
  c.input("x", {1, 3, 8, 8}, onnx::TensorProto::DOUBLE).init_random("w", {4, 3, 3, 3});
  c.node("Conv", {"x", "w"}, {"y"}, "stem");
  c.output("y", {}, onnx::TensorProto::DOUBLE);
  expect_error([&] { Session(c.load()); }, {"stem", "float64", "must be float32", "model.float()", "Cast"});
}

TEST(BadGraph, PowOfBools) {
  OnnxBuilder b;
  b.input("a", {2, 3}, onnx::TensorProto::BOOL).input("e", {1});
  b.node("Pow", {"a", "e"}, {"y"}, "power");
  b.output("y", {}, onnx::TensorProto::BOOL);
  // A bool input is planned when its value is known (run), or for inspect.
  expect_error([&] { Session(b.load()).inspect(); }, {"power", "base", "bool"});
}

}  // namespace
}  // namespace sluice::testing
