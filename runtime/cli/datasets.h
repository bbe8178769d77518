// Labelled image datasets for `sluice eval`: Fashion-MNIST in the IDX format, gzipped, as
// Debian's dataset-fashion-mnist package installs it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sluice::cli {

struct Dataset {
  std::string name;
  int64_t count = 0, channels = 0, height = 0, width = 0;
  std::vector<float> images;     // count x channels x height x width, normalised
  std::vector<int64_t> labels;   // count
  std::vector<std::string> classes;
};

// Reads DIR/{t10k,train}-{images-idx3,labels-idx1}-ubyte.gz and normalises the pixels
// as (x / 255 - mean) / std. Throws sluice::Error naming the file and what is wrong
// (missing, not gzip, not IDX, counts that disagree, truncated).
Dataset load_fashion_mnist(const std::string& dir, const std::string& split, float mean, float std);

// The raw bytes of an IDX file (optionally gzipped) and its dims; exposed for tests.
struct IdxFile {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
IdxFile read_idx_gz(const std::string& path);

}  // namespace sluice::cli
