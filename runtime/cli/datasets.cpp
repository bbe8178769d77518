#include "runtime/cli/datasets.h"

#include <zlib.h>

#include <filesystem>

#include "sluice/sluice.h"

namespace sluice::cli {

namespace {

// What gzread gives (zlib reads plain files through the same call), up to `limit` + 1 bytes:
// a file that inflates past what its header declares stops there (a gzip bomb of a few MB
// inflated to GBs before it was refused).
std::vector<uint8_t> read_upto(const std::string& path, size_t limit) {
  if (!std::filesystem::exists(path)) throw Error(path + ": not found");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  while (out.size() <= limit) {
    const size_t want = std::min(sizeof buf, limit + 1 - out.size());
    int n = gzread(f, buf, static_cast<unsigned>(want));
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      throw Error(path + ": not a readable gzip file (" + msg + ")");
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  gzclose(f);
  return out;
}

}  // namespace

IdxFile read_idx_gz(const std::string& path) {
  // IDX: 0 0 <type 0x08 = ubyte> <ndim>, then ndim big-endian uint32 dims, then the data.
  std::vector<uint8_t> raw = read_upto(path, 4 + 4 * 4);
  if (raw.size() < 4 || raw[0] != 0 || raw[1] != 0)
    throw Error(path + ": not an IDX file (bad magic number)");
  if (raw[2] != 0x08) throw Error(path + ": IDX element type " + std::to_string(raw[2]) + " is not unsigned byte (8)");
  const size_t ndim = raw[3];
  if (ndim == 0 || ndim > 4) throw Error(path + ": IDX rank " + std::to_string(ndim) + " (expected 1 to 4)");
  if (raw.size() < 4 + 4 * ndim) throw Error(path + ": truncated IDX header");
  IdxFile idx;
  uint64_t numel = 1;
  constexpr uint64_t kMax = uint64_t{1} << 31;
  for (size_t i = 0; i < ndim; ++i) {
    const uint8_t* p = raw.data() + 4 + 4 * i;
    int64_t d = (int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | int64_t{p[3]};
    idx.dims.push_back(d);
    numel = std::min(numel * static_cast<uint64_t>(d), kMax + 1);  // (d < 2^32: no overflow below 2^63)
  }
  if (numel > kMax)
    throw Error(path + ": IDX header declares more than 2 GiB of data; not an image dataset Sluice can evaluate");
  const size_t header = 4 + 4 * ndim;
  raw = read_upto(path, header + static_cast<size_t>(numel));
  if (raw.size() != header + numel)
    throw Error(path + ": IDX header declares " + std::to_string(numel) + " bytes of data, the file holds " +
                (raw.size() > header + numel ? "more" : std::to_string(raw.size() - header)) + " (truncated or corrupt)");
  idx.data.assign(raw.begin() + static_cast<std::ptrdiff_t>(header), raw.end());
  return idx;
}

Dataset load_fashion_mnist(const std::string& dir, const std::string& split, float mean, float std) {
  if (!std::filesystem::is_directory(dir))
    throw Error(dir + ": no Fashion-MNIST here; install Debian's dataset-fashion-mnist package "
                      "(apt-get install dataset-fashion-mnist) or pass --data-dir");
  if (split != "test" && split != "train") throw Error("--split " + split + ": expected test or train");
  if (!(std > 0)) throw Error("--std must be positive");
  const std::string prefix = split == "test" ? "t10k" : "train";
  const std::string img_path = (std::filesystem::path(dir) / (prefix + "-images-idx3-ubyte.gz")).string();
  const std::string lbl_path = (std::filesystem::path(dir) / (prefix + "-labels-idx1-ubyte.gz")).string();
  IdxFile img = read_idx_gz(img_path), lbl = read_idx_gz(lbl_path);
  if (img.dims.size() != 3) throw Error(img_path + ": expected images N x H x W, got rank " + std::to_string(img.dims.size()));
  if (lbl.dims.size() != 1) throw Error(lbl_path + ": expected labels of rank 1, got rank " + std::to_string(lbl.dims.size()));
  if (img.dims[0] != lbl.dims[0])
    throw Error(img_path + " holds " + std::to_string(img.dims[0]) + " images but " + lbl_path + " holds " +
                std::to_string(lbl.dims[0]) + " labels");
  Dataset d;
  d.name = "fashion-mnist/" + split;
  d.count = img.dims[0];
  d.channels = 1;
  d.height = img.dims[1];
  d.width = img.dims[2];
  d.classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  d.images.resize(img.data.size());
  for (size_t i = 0; i < img.data.size(); ++i) d.images[i] = (static_cast<float>(img.data[i]) / 255.f - mean) / std;
  d.labels.resize(lbl.data.size());
  for (size_t i = 0; i < lbl.data.size(); ++i) {
    if (lbl.data[i] >= d.classes.size())
      throw Error(lbl_path + ": label " + std::to_string(lbl.data[i]) + " at index " + std::to_string(i) +
                  " is not a Fashion-MNIST class (0-9)");
    d.labels[i] = lbl.data[i];
  }
  return d;
}

}  // namespace sluice::cli
