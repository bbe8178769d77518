// NumPy .npy reading and writing. Format reference:
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//
//   "\x93NUMPY" major minor  header_len (u16 LE for 1.0, u32 LE for 2.0/3.0)
//   header: a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//   padded with spaces and terminated by '\n'; then the raw C-order data.
#include "runtime/npy.h"

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "runtime/memory_limit.h"

namespace sluice::npy {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr int64_t kMaxElements = int64_t{1} << 40;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw Error(name + ": " + what);
}

// ---- a tiny parser for the Python literals that appear in .npy headers ---------------

struct PyValue {
  enum Kind { Str, Int, Bool, None, Tuple, List, Dict } kind = None;
  std::string str;
  int64_t num = 0;
  bool overflow = false;  // integer literal did not fit in int64
  bool flag = false;
  std::vector<PyValue> items;                             // Tuple, List
  std::vector<std::pair<std::string, PyValue>> entries;  // Dict (string keys only)
};

class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& name) : s_(text), name_(name) {}

  PyValue parse_top() {
    PyValue v = value(0);
    skip_ws();
    if (pos_ != s_.size()) error("unexpected text after the header dictionary");
    return v;
  }

 private:
  const std::string& s_;
  const std::string& name_;
  size_t pos_ = 0;

  [[noreturn]] void error(const std::string& what) {
    std::string shown = s_;
    while (!shown.empty() && (shown.back() == ' ' || shown.back() == '\n')) shown.pop_back();
    if (shown.size() > 200) shown = shown.substr(0, 200) + "...";
    for (char& c : shown)  // binary bytes (a wrong header length reads into the data) would garble the terminal
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    fail(name_, "malformed .npy header (" + what + " at offset " + std::to_string(pos_) +
                    "): " + shown);
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' ||
                                s_[pos_] == '\r'))
      ++pos_;
  }
  bool eat(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) error(std::string("expected '") + c + "'");
  }

  PyValue value(int depth) {
    if (depth > 16) error("nesting too deep");
    skip_ws();
    if (pos_ >= s_.size()) error("unexpected end");
    char c = s_[pos_];
    if (c == '\'' || c == '"') {
      PyValue v;
      v.kind = PyValue::Str;
      v.str = string_lit();
      return v;
    }
    if (c == '{') return dict(depth);
    if (c == '(') return sequence(depth, ')', PyValue::Tuple);
    if (c == '[') return sequence(depth, ']', PyValue::List);
    if (c == '-' || c == '+' || (c >= '0' && c <= '9')) return integer();
    if (std::isalpha(static_cast<unsigned char>(c))) {
      size_t start = pos_;
      while (pos_ < s_.size() && std::isalnum(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      std::string word = s_.substr(start, pos_ - start);
      PyValue v;
      if (word == "True" || word == "False") {
        v.kind = PyValue::Bool;
        v.flag = word == "True";
        return v;
      }
      if (word == "None") return v;
      pos_ = start;
      error("unexpected word '" + word + "'");
    }
    error(std::string("unexpected character '") + c + "'");
  }

  std::string string_lit() {
    char quote = s_[pos_++];
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
      out += s_[pos_++];
    }
    if (pos_ >= s_.size()) error("unterminated string");
    ++pos_;
    return out;
  }

  PyValue integer() {
    PyValue v;
    v.kind = PyValue::Int;
    bool neg = false;
    if (s_[pos_] == '-' || s_[pos_] == '+') neg = s_[pos_++] == '-';
    if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_])))
      error("expected a digit");
    uint64_t n = 0;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      uint64_t d = static_cast<uint64_t>(s_[pos_++] - '0');
      if (n > (UINT64_MAX - d) / 10 || n * 10 + d > static_cast<uint64_t>(INT64_MAX))
        v.overflow = true;
      else
        n = n * 10 + d;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l')) ++pos_;  // Python 2 long
    v.num = neg ? -static_cast<int64_t>(n) : static_cast<int64_t>(n);
    return v;
  }

  PyValue sequence(int depth, char close, PyValue::Kind kind) {
    PyValue v;
    v.kind = kind;
    ++pos_;
    if (eat(close)) return v;
    for (;;) {
      v.items.push_back(value(depth + 1));
      if (eat(close)) return v;
      expect(',');
      if (eat(close)) return v;
    }
  }

  PyValue dict(int depth) {
    PyValue v;
    v.kind = PyValue::Dict;
    ++pos_;
    if (eat('}')) return v;
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"'))
        error("expected a string key");
      std::string key = string_lit();
      expect(':');
      v.entries.emplace_back(key, value(depth + 1));
      if (eat('}')) return v;
      expect(',');
      if (eat('}')) return v;
    }
  }
};

uint32_t read_le(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

const char* kSupported = "<f4, <f8, <i8, <i4, |i1, |u1, |b1";

// Maps a NumPy dtype string to a Sluice dtype, or throws naming what is wrong.
DType parse_descr(const std::string& descr, const std::string& name) {
  if (descr.size() < 2) fail(name, "unsupported dtype '" + descr + "' (supported: " + kSupported + ")");
  char order = descr[0];
  std::string code = descr.substr(1);
  DType t = DType::Undefined;
  if (code == "f4") t = DType::Float32;
  else if (code == "f8") t = DType::Float64;
  else if (code == "i8") t = DType::Int64;
  else if (code == "i4") t = DType::Int32;
  else if (code == "i1") t = DType::Int8;
  else if (code == "u1") t = DType::UInt8;
  else if (code == "b1") t = DType::Bool;
  if (t == DType::Undefined || (order != '<' && order != '>' && order != '=' && order != '|'))
    fail(name, "unsupported dtype '" + descr + "' (supported: " + kSupported + ")");
  bool single_byte = dtype_size(t) == 1;
  if (!single_byte) {
    if (order == '>')
      fail(name, "big-endian dtype '" + descr +
                     "' is not supported; convert with arr.astype(arr.dtype.newbyteorder('<'))");
    if (order == '|')
      fail(name, "dtype '" + descr + "' has byte order '|' (not applicable), which is invalid for a "
                 "multi-byte type");
    // '=' is native order; Sluice only runs on little-endian hosts.
  }
  return t;
}

const char* descr_of(DType t) {
  switch (t) {
    case DType::Float32: return "<f4";
    case DType::Float64: return "<f8";
    case DType::Int64: return "<i8";
    case DType::Int32: return "<i4";
    case DType::Int8: return "|i1";
    case DType::UInt8: return "|u1";
    case DType::Bool: return "|b1";
    case DType::Undefined: break;
  }
  return nullptr;
}

}  // namespace

Tensor parse(const void* data, size_t size, const std::string& name) {
  const auto* p = static_cast<const unsigned char*>(data);
  if (size < kMagicLen + 2 || std::memcmp(p, kMagic, kMagicLen) != 0)
    fail(name, "not a .npy file (bad magic); expected a NumPy array saved with numpy.save");
  int major = p[6], minor = p[7];
  size_t len_bytes;
  if (major == 1) len_bytes = 2;
  else if (major == 2 || major == 3) len_bytes = 4;
  else
    fail(name, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");
  if (minor != 0)
    fail(name, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + " (supported: 1.0, 2.0, 3.0)");
  size_t prefix = kMagicLen + 2 + len_bytes;
  if (size < prefix)
    fail(name, "truncated .npy header: file is " + std::to_string(size) + " bytes");
  size_t header_len = read_le(p + kMagicLen + 2, static_cast<int>(len_bytes));
  if (header_len > size - prefix)
    fail(name, "truncated .npy header: header length is " + std::to_string(header_len) +
                   " bytes but only " + std::to_string(size - prefix) + " bytes follow");
  std::string header(reinterpret_cast<const char*>(p + prefix), header_len);

  PyValue dict = HeaderParser(header, name).parse_top();
  if (dict.kind != PyValue::Dict) fail(name, "malformed .npy header: not a dictionary: " + header);
  const PyValue* descr = nullptr;
  const PyValue* fortran = nullptr;
  const PyValue* shape_v = nullptr;
  for (const auto& [key, v] : dict.entries) {
    if (key == "descr") descr = &v;
    else if (key == "fortran_order") fortran = &v;
    else if (key == "shape") shape_v = &v;
    else fail(name, "malformed .npy header: unexpected key '" + key + "'");
  }
  if (!descr) fail(name, "malformed .npy header: missing key 'descr'");
  if (!fortran) fail(name, "malformed .npy header: missing key 'fortran_order'");
  if (!shape_v) fail(name, "malformed .npy header: missing key 'shape'");

  if (descr->kind != PyValue::Str)
    fail(name, std::string("unsupported dtype: structured or record arrays are not supported (supported: ") +
                   kSupported + ")");
  DType dtype = parse_descr(descr->str, name);

  if (fortran->kind != PyValue::Bool)
    fail(name, "malformed .npy header: 'fortran_order' must be True or False");
  if (fortran->flag)
    fail(name, "Fortran-order (column-major) arrays are not supported; save a C-order array "
               "(numpy.ascontiguousarray) instead");

  if (shape_v->kind != PyValue::Tuple)
    fail(name, "malformed .npy header: 'shape' must be a tuple of integers");
  Shape shape;
  int64_t numel = 1;
  for (const PyValue& d : shape_v->items) {
    if (d.kind != PyValue::Int)
      fail(name, "malformed .npy header: 'shape' must be a tuple of integers");
    if (d.overflow) fail(name, "absurd shape: a dimension does not fit in 64 bits");
    if (d.num < 0) fail(name, "invalid shape: negative dimension " + std::to_string(d.num));
    shape.push_back(d.num);
  }
  if (shape.size() > 64) fail(name, "absurd shape: " + std::to_string(shape.size()) + " dimensions");
  for (int64_t d : shape) {
    if (d != 0 && numel > kMaxElements / d) {
      numel = -1;
      break;
    }
    numel *= d;
  }
  if (numel < 0 || numel > kMaxElements) {
    // A zero dimension makes any shape empty; only an actual large count is absurd.
    bool has_zero = false;
    for (int64_t d : shape) has_zero |= d == 0;
    if (!has_zero)
      fail(name, "absurd shape " + shape_str(shape) + ": more than 2^40 elements");
    numel = 0;
  }

  size_t expected = static_cast<size_t>(numel) * dtype_size(dtype);
  size_t actual = size - prefix - header_len;
  if (actual < expected)
    fail(name, "truncated data: shape " + shape_str(shape) + " of " + dtype_name(dtype) +
                   " needs " + std::to_string(expected) + " bytes, but the file has " +
                   std::to_string(actual));
  if (actual > expected)
    fail(name, "data size mismatch: shape " + shape_str(shape) + " of " + dtype_name(dtype) +
                   " needs " + std::to_string(expected) + " bytes, but the file has " +
                   std::to_string(actual) + " (" + std::to_string(actual - expected) +
                   " trailing bytes)");

  Tensor t = Tensor::copy_of(dtype, std::move(shape), p + prefix + header_len);
  if (dtype == DType::Bool) {  // normalise to 0/1 so kernels may rely on it
    auto* b = static_cast<unsigned char*>(t.raw());
    for (size_t i = 0; i < expected; ++i) b[i] = b[i] ? 1 : 0;
  }
  return t;
}

Tensor load(const std::string& path) {
  // A regular file of a size this machine can hold: not a directory, a device (/dev/zero
  // never ends) or a FIFO (which may never be written), read whole.
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) fail(path, "cannot open file: no such file");
  if (!std::filesystem::is_regular_file(st))
    fail(path, std::filesystem::is_directory(st) ? "is a directory, not a .npy file" : "is not a regular file (a device or a pipe?); save the array to a .npy file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read its size: " + ec.message());
  if (const double have = runtime::machine_bytes(); have > 0 && static_cast<double>(size) > have / 2)
    fail(path, "is " + runtime::gib(static_cast<double>(size)) + ", more than half of " + runtime::memory_limit().what);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, std::string("cannot open file: ") + std::strerror(errno));
  std::vector<char> bytes(static_cast<size_t>(size));
  f.read(bytes.data(), static_cast<std::streamsize>(size));
  if (f.bad() || static_cast<size_t>(f.gcount()) != size) fail(path, "read error");
  return parse(bytes.data(), bytes.size(), path);
}

void save(const std::string& path, const Tensor& t) {
  const char* descr = descr_of(t.dtype());
  if (!descr) fail(path, "cannot save a tensor of undefined dtype");
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < t.shape().size(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(t.shape()[i]);
  }
  if (t.shape().size() == 1) dict += ",";
  dict += "), }";

  // Version 1.0 (16-bit header length) unless the header does not fit.
  int major = 1;
  size_t prefix = kMagicLen + 2 + 2;
  size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  if (total - prefix > 65535) {
    major = 2;
    prefix = kMagicLen + 2 + 4;
    total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  }
  size_t header_len = total - prefix;
  std::string header = dict + std::string(header_len - dict.size() - 1, ' ') + "\n";

  std::string out(kMagic, kMagicLen);
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i)
    out += static_cast<char>((header_len >> (8 * i)) & 0xff);
  out += header;

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(path, std::string("cannot open file for writing: ") + std::strerror(errno));
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  if (t.nbytes()) f.write(static_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
  f.close();
  if (!f) fail(path, "write error (disk full?)");
}

}  // namespace sluice::npy
