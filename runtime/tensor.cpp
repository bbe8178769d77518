#include <algorithm>
#include <cstring>
#include <limits>

#include "runtime/memory_limit.h"

#include "sluice/sluice.h"

namespace sluice {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
    case DType::Int32: return "int32";
    case DType::Int8: return "int8";
    case DType::UInt8: return "uint8";
    case DType::Bool: return "bool";
    case DType::Undefined: break;
  }
  return "undefined";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float64:
    case DType::Int64: return 8;
    case DType::Float32:
    case DType::Int32: return 4;
    case DType::Int8:
    case DType::UInt8:
    case DType::Bool: return 1;
    case DType::Undefined: break;
  }
  return 0;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += s[i] < 0 ? std::string("?") : std::to_string(s[i]);
  }
  return r + "]";
}

namespace {
constexpr int64_t kMaxElements = int64_t{1} << 40;

int64_t checked_count(const Shape& shape) {
  for (int64_t d : shape)
    if (d < 0) throw Error("tensor shape " + shape_str(shape) + " has a negative or unknown dimension");
  // (A dimension of 0 anywhere: no elements, however large the others; [2^20, 2^21, 0] was "too
  // large" where [0, 2^20, 2^21] was empty.)
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (n > kMaxElements / d)
      throw Error("tensor shape " + shape_str(shape) + " is too large (more than 2^40 elements)");
    n *= d;
  }
  return n;
}
}  // namespace

Tensor::Tensor(DType dtype, Shape shape) : Tensor(dtype, std::move(shape), true) {}

Tensor Tensor::uninitialized(DType dtype, Shape shape) { return Tensor(dtype, std::move(shape), false); }

Tensor::Tensor(DType dtype, Shape shape, bool zero) : dtype_(dtype), shape_(std::move(shape)) {
  if (dtype == DType::Undefined) throw Error("cannot create a tensor of undefined dtype");
  size_t bytes = static_cast<size_t>(checked_count(shape_)) * dtype_size(dtype);
  // More than the machine has is refused here, not left to new[] (std::bad_alloc) or to the
  // kernel's out-of-memory killer once the zero fill touches it.
  if (const double have = runtime::machine_bytes(); have > 0 && static_cast<double>(bytes) > have)
    throw Error("tensor shape " + shape_str(shape_) + " of " + dtype_name(dtype) + " would take " +
                runtime::gib(static_cast<double>(bytes)) + ", more than " + runtime::memory_limit().what);
  // Always allocate at least one element so raw() is never null. On a cache line: a run's
  // outputs are written by vector stores, and malloc's 16-byte alignment had half of a
  // reorder's 32-byte stores split lines (the 56x56x64 shift model's NHWC -> NCHW output
  // reorder took 0.235 ms where the same reorder of the 1x1 conv model, whose output happened
  // to fall on a line, took 0.120).
  const size_t n = bytes ? bytes : 8;
  auto* p = static_cast<std::byte*>(::operator new[](n, std::align_val_t(64)));
  if (zero) std::memset(p, 0, n);
  data_ = std::shared_ptr<std::byte[]>(p, [](std::byte* q) { ::operator delete[](q, std::align_val_t(64)); });
}

Tensor Tensor::copy_of(DType dtype, Shape shape, const void* data) {
  Tensor t = uninitialized(dtype, std::move(shape));
  if (t.nbytes() && !data) throw Error("Tensor::copy_of: a null data pointer for " + std::to_string(t.nbytes()) + " bytes");
  if (t.nbytes()) std::memcpy(t.raw(), data, t.nbytes());
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

Tensor Tensor::reshaped(Shape shape) const {
  if (checked_count(shape) != numel())
    throw Error("cannot reshape a tensor of shape " + shape_str(shape_) + " to " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

void Tensor::check_type(DType t) const {
  if (t != dtype_)
    throw Error(std::string("tensor holds ") + dtype_name(dtype_) + ", accessed as " + dtype_name(t));
}

}  // namespace sluice
