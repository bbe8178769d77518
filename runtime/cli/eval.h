// `sluice eval`: accuracy and executed MACs of a classifier over a labelled dataset.
#pragma once

#include <string>

#include "sluice/sluice.h"

namespace sluice::cli {

struct EvalOptions {
  std::string model;
  std::string data = "fashion-mnist";
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string split = "test";
  int64_t limit = 0;   // 0: the whole split
  int64_t batch = 100;
  float mean = 0.2860f, std = 0.3530f;  // the normalisation the models were trained with
  std::string plot;    // SVG path ("" = <model stem>_density.svg in the working directory, "-" = none)
  std::string json;    // JSON results path ("" = none)
  std::string progress = "auto";  // auto (when stderr is a terminal), on, off
};

int cmd_eval(const EvalOptions& eval, const SessionOptions& options);

// Whether `path` can be opened for writing, tried before the work whose result goes there (a
// file it had to create is removed again), so that a missing directory or a name too long
// fails at once: "PATH: cannot write WHAT: <reason>".
void check_writable(const std::string& path, const std::string& what);

// Writes `text` to `path`, or throws "PATH: cannot write WHAT: <reason>" (a full disk too: the
// stream is closed and checked, not left to fail silently).
void write_file(const std::string& path, const std::string& text, const std::string& what);

}  // namespace sluice::cli
