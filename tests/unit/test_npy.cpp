// Tests of runtime/npy: round trips, NumPy-compatible headers, and every error path
// (each asserting that the message names the file and the reason).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

#include "runtime/npy.h"
#include "sluice/sluice.h"

namespace fs = std::filesystem;
using sluice::DType;
using sluice::Shape;
using sluice::Tensor;

namespace {

// A per-test scratch directory (tests may run in parallel under ctest).
fs::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::temp_directory_path() /
                 ("sluice_test_npy_" + std::to_string(::getpid()) + "_" + info->test_suite_name() +
                  "_" + info->name());
  fs::create_directories(dir);
  return dir;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Builds a .npy byte string from a header dict (padded like NumPy does) and raw data.
std::string make_npy(const std::string& dict, const std::string& data = "", int major = 1) {
  size_t len_bytes = major == 1 ? 2 : 4;
  size_t prefix = 8 + len_bytes;
  size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  size_t hlen = total - prefix;
  std::string s = "\x93NUMPY";
  s += static_cast<char>(major);
  s += '\0';
  for (size_t i = 0; i < len_bytes; ++i) s += static_cast<char>((hlen >> (8 * i)) & 0xff);
  s += dict + std::string(hlen - dict.size() - 1, ' ') + "\n";
  return s + data;
}

std::string header(const std::string& descr, const std::string& shape, bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape + ", }";
}

Tensor parse(const std::string& bytes, const std::string& name = "input.npy") {
  return sluice::npy::parse(bytes.data(), bytes.size(), name);
}

// Runs fn, expecting sluice::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected sluice::Error, nothing was thrown";
  } catch (const sluice::Error& e) {
    std::string msg = e.what();
    for (const auto& part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "message \"" << msg << "\" lacks \"" << part << "\"";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected sluice::Error, got another exception: " << e.what();
  }
}

// Parses bytes named "input.npy", expecting an Error that starts with the name and
// contains every one of `parts`.
void expect_parse_error(const std::string& bytes, std::initializer_list<std::string> parts) {
  std::vector<std::string> all{"input.npy: "};
  all.insert(all.end(), parts.begin(), parts.end());
  expect_error([&] { parse(bytes, "input.npy"); }, all);
}

template <class T>
void expect_round_trip(const Shape& shape, const std::vector<T>& values) {
  fs::path path = scratch_dir() / "t.npy";
  // std::vector<bool> has no data(): store bools as bytes.
  std::vector<std::conditional_t<std::is_same_v<T, bool>, uint8_t, T>> buf(values.begin(), values.end());
  Tensor t = Tensor::copy_of(sluice::dtype_of<T>(), shape, buf.data());
  sluice::npy::save(path.string(), t);
  Tensor back = sluice::npy::load(path.string());
  ASSERT_EQ(back.dtype(), sluice::dtype_of<T>());
  ASSERT_EQ(back.shape(), shape);
  ASSERT_EQ(back.numel(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(back.data<T>()[i], values[i]) << "index " << i;

  // The file is a valid version 1.0 file with a 64-byte-aligned header ending in '\n'.
  std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ(bytes[6], '\x01');
  EXPECT_EQ(bytes[7], '\x00');
  size_t hlen = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + hlen) % 64, 0u);
  EXPECT_EQ(bytes[10 + hlen - 1], '\n');
  EXPECT_EQ(bytes.size(), 10 + hlen + values.size() * sizeof(T));
}

}  // namespace

// ---- round trips ----------------------------------------------------------------------

TEST(Npy, RoundTripFloat32) { expect_round_trip<float>({2, 3}, {1.5f, -2.f, 0.f, 3.25f, 1e-30f, 1e30f}); }
TEST(Npy, RoundTripFloat64) { expect_round_trip<double>({3}, {1.0 / 3, -1e300, 4.9e-324}); }
TEST(Npy, RoundTripInt64) {
  expect_round_trip<int64_t>({2, 1, 2}, {INT64_MIN, -1, 0, INT64_MAX});
}
TEST(Npy, RoundTripInt32) { expect_round_trip<int32_t>({4}, {INT32_MIN, -7, 0, INT32_MAX}); }
TEST(Npy, RoundTripInt8) { expect_round_trip<int8_t>({2, 2}, {-128, -1, 0, 127}); }
TEST(Npy, RoundTripUInt8) { expect_round_trip<uint8_t>({1, 3}, {0, 128, 255}); }
TEST(Npy, RoundTripBool) { expect_round_trip<bool>({5}, {true, false, false, true, true}); }

TEST(Npy, RoundTripScalars) {
  expect_round_trip<float>({}, {42.5f});
  expect_round_trip<double>({}, {-0.125});
  expect_round_trip<int64_t>({}, {1234567890123});
  expect_round_trip<int32_t>({}, {-5});
  expect_round_trip<int8_t>({}, {-3});
  expect_round_trip<uint8_t>({}, {200});
  expect_round_trip<bool>({}, {true});
}

TEST(Npy, RoundTripEmptyTensor) { expect_round_trip<float>({0, 4}, {}); }

TEST(Npy, RoundTripLargeRank) {
  std::vector<int32_t> v(2 * 3 * 1 * 2 * 2 * 1);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>(i * 7);
  expect_round_trip<int32_t>({2, 3, 1, 2, 2, 1}, v);
}

TEST(Npy, SavedHeaderMatchesNumpy) {
  fs::path path = scratch_dir() / "h.npy";
  sluice::npy::save(path.string(), Tensor(DType::Float32, {2, 3}));
  std::string bytes = read_bytes(path);
  EXPECT_EQ(bytes.substr(10, 59), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
  sluice::npy::save(path.string(), Tensor(DType::Bool, {5}));
  EXPECT_EQ(read_bytes(path).substr(10, 57), "{'descr': '|b1', 'fortran_order': False, 'shape': (5,), }");
  sluice::npy::save(path.string(), Tensor(DType::Float64, {}));
  EXPECT_EQ(read_bytes(path).substr(10, 55), "{'descr': '<f8', 'fortran_order': False, 'shape': (), }");
}

// ---- reading files as NumPy writes them ----------------------------------------------------

TEST(Npy, ParsesNumpyWrittenBytes) {
  // Exactly what numpy 1.24's np.save(np.arange(6, dtype=np.float32).reshape(2, 3)) writes:
  // the header is padded to 128 bytes (room for growth), not 64.
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  std::string bytes = std::string("\x93NUMPY\x01\x00\x76\x00", 10) + dict + std::string(117 - dict.size(), ' ') + "\n";
  ASSERT_EQ(bytes.size(), 128u);
  float vals[6] = {0, 1, 2, 3, 4, 5};
  bytes.append(reinterpret_cast<const char*>(vals), sizeof vals);
  Tensor t = parse(bytes);
  EXPECT_EQ(t.dtype(), DType::Float32);
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data<float>()[i], static_cast<float>(i));
}

TEST(Npy, ParsesVersions2And3) {
  int32_t vals[3] = {7, 8, 9};
  std::string data(reinterpret_cast<const char*>(vals), sizeof vals);
  for (int major : {2, 3}) {
    Tensor t = parse(make_npy(header("<i4", "(3,)"), data, major));
    EXPECT_EQ(t.dtype(), DType::Int32);
    EXPECT_EQ(t.shape(), (Shape{3}));
    EXPECT_EQ(t.data<int32_t>()[2], 9);
  }
}

TEST(Npy, ParsesByteOrderVariants) {
  float f = 2.5f;
  std::string fdata(reinterpret_cast<const char*>(&f), 4);
  EXPECT_EQ(parse(make_npy(header("=f4", "()"), fdata)).data<float>()[0], 2.5f);
  EXPECT_EQ(parse(make_npy(header("<u1", "(1,)"), "\xff")).data<uint8_t>()[0], 255);
  EXPECT_EQ(parse(make_npy(header("=i1", "(1,)"), "\xfe")).data<int8_t>()[0], -2);
  EXPECT_EQ(parse(make_npy(header("|b1", "(2,)"), std::string("\x01\x00", 2))).data<bool>()[0], true);
}

TEST(Npy, ParsesHeaderSpellingVariants) {
  int64_t v[2] = {1, 2};
  std::string data(reinterpret_cast<const char*>(v), sizeof v);
  // Keys in another order, double quotes, Python 2 long suffix, no trailing comma.
  Tensor t = parse(make_npy("{\"shape\": (1L, 2L), \"fortran_order\": False, \"descr\": \"<i8\"}", data));
  EXPECT_EQ(t.dtype(), DType::Int64);
  EXPECT_EQ(t.shape(), (Shape{1, 2}));
  EXPECT_EQ(t.data<int64_t>()[1], 2);
}

// ---- errors: each names the file and says what is wrong --------------------------------------

TEST(NpyErrors, BadMagic) {
  expect_parse_error("PK\x03\x04 this is a zip file, not an npy",
                     {"not a .npy file (bad magic)", "numpy.save"});
  expect_parse_error("", {"not a .npy file (bad magic)"});
}

TEST(NpyErrors, UnsupportedVersion) {
  std::string bytes = make_npy(header("<f4", "()"), std::string(4, '\0'));
  bytes[6] = 4;
  expect_parse_error(bytes, {"unsupported .npy format version 4.0"});
  bytes[6] = 1;
  bytes[7] = 1;
  expect_parse_error(bytes, {"unsupported .npy format version 1.1"});
}

TEST(NpyErrors, TruncatedHeader) {
  std::string bytes = make_npy(header("<f4", "(2,)"));
  expect_parse_error(bytes.substr(0, 40), {"truncated .npy header", "header length is 118"});
  expect_parse_error(bytes.substr(0, 9), {"truncated .npy header"});
}

TEST(NpyErrors, FortranOrder) {
  expect_parse_error(make_npy(header("<f4", "(2, 2)", true), std::string(16, '\0')),
                     {"Fortran-order", "not supported"});
}

TEST(NpyErrors, BigEndian) {
  expect_parse_error(make_npy(header(">f4", "(2,)"), std::string(8, '\0')),
                     {"big-endian", "'>f4'"});
  expect_parse_error(make_npy(header(">i8", "()"), std::string(8, '\0')), {"big-endian", "'>i8'"});
}

TEST(NpyErrors, NotApplicableByteOrderOnMultiByteType) {
  expect_parse_error(make_npy(header("|f4", "()"), std::string(4, '\0')), {"'|f4'", "byte order"});
}

TEST(NpyErrors, UnsupportedDtype) {
  expect_parse_error(make_npy(header("<f2", "(2,)"), std::string(4, '\0')),
                     {"unsupported dtype '<f2'", "<f4"});
  expect_parse_error(make_npy(header("<u4", "()"), std::string(4, '\0')), {"unsupported dtype '<u4'"});
  expect_parse_error(make_npy(header("<U5", "()"), std::string(20, '\0')), {"unsupported dtype '<U5'"});
  expect_parse_error(make_npy(header("|O", "()"), std::string(8, '\0')), {"unsupported dtype '|O'"});
  expect_parse_error(
      make_npy("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }",
               std::string(8, '\0')),
      {"unsupported dtype", "structured"});
}

TEST(NpyErrors, TruncatedData) {
  expect_parse_error(make_npy(header("<f4", "(2, 3)"), std::string(20, '\0')),
                     {"truncated data", "needs 24 bytes", "has 20"});
  expect_parse_error(make_npy(header("<i8", "()"), ""), {"truncated data", "needs 8 bytes", "has 0"});
}

TEST(NpyErrors, TrailingData) {
  expect_parse_error(make_npy(header("|u1", "(3,)"), "abcd"),
                     {"data size mismatch", "needs 3 bytes", "has 4"});
}

TEST(NpyErrors, AbsurdShape) {
  // 2^20 * 2^20 * 2 elements > 2^40.
  expect_parse_error(make_npy(header("<f4", "(1048576, 1048576, 2)")), {"absurd shape", "2^40"});
  // Product overflows int64.
  expect_parse_error(make_npy(header("<f4", "(4294967296, 4294967296, 4294967296)")),
                     {"absurd shape"});
  // A single dimension that does not even fit in 64 bits.
  expect_parse_error(make_npy(header("<f4", "(123456789012345678901234567890,)")),
                     {"absurd shape", "64 bits"});
}

TEST(NpyErrors, NegativeDimension) {
  expect_parse_error(make_npy(header("<f4", "(2, -1)")), {"negative dimension -1"});
}

TEST(NpyErrors, MalformedHeader) {
  expect_parse_error(make_npy("{'descr': '<f4', 'fortran_order': False}"), {"missing key 'shape'"});
  expect_parse_error(make_npy("{'descr': '<f4', 'shape': ()}"), {"missing key 'fortran_order'"});
  expect_parse_error(make_npy("{'fortran_order': False, 'shape': ()}"), {"missing key 'descr'"});
  expect_parse_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}"),
                     {"unexpected key 'x'"});
  expect_parse_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3"),
                     {"malformed .npy header"});
  expect_parse_error(make_npy("this is not a dict"), {"malformed .npy header"});
  expect_parse_error(make_npy("['<f4', False, ()]"), {"malformed .npy header", "not a dictionary"});
  expect_parse_error(make_npy("{'descr': '<f4', 'fortran_order': 0, 'shape': ()}"),
                     {"'fortran_order' must be True or False"});
  expect_parse_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}"),
                     {"'shape' must be a tuple"});
  expect_parse_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': ('a',)}"),
                     {"'shape' must be a tuple"});
}

TEST(NpyErrors, LoadMissingFile) {
  std::string path = (scratch_dir() / "does_not_exist.npy").string();
  expect_error([&] { sluice::npy::load(path); }, {path, "cannot open file"});
}

TEST(NpyErrors, LoadNamesThePath) {
  fs::path path = scratch_dir() / "input.npy";
  std::ofstream(path, std::ios::binary) << "hello";
  expect_error([&] { sluice::npy::load(path.string()); }, {path.string(), "bad magic"});
}

TEST(NpyErrors, SaveToMissingDirectory) {
  std::string path = (scratch_dir() / "no_such_dir" / "out.npy").string();
  expect_error([&] { sluice::npy::save(path, Tensor(DType::Float32, {1})); },
               {path, "cannot open file for writing"});
}

TEST(NpyErrors, SaveUndefinedTensor) {
  std::string path = (scratch_dir() / "out.npy").string();
  expect_error([&] { sluice::npy::save(path, Tensor()); }, {path, "undefined dtype"});
}

namespace {
// Only regular files are read, whole: a device never ends (/dev/zero filled memory until
// std::bad_alloc), a FIFO may never be written, a directory is a mistake to name.
TEST(Npy, LoadRefusesWhatIsNotARegularFile) {
  expect_error([] { sluice::npy::load("/dev/zero"); }, {"/dev/zero", "not a regular file"});
  expect_error([] { sluice::npy::load(scratch_dir().string()); }, {"is a directory"});
  expect_error([] { sluice::npy::load((scratch_dir() / "missing.npy").string()); }, {"missing.npy", "no such file"});
}
}  // namespace
