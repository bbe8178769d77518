// A minimal application on the installed library: loads MODEL, fills every input with
// x[i] = sin(0.37 * i) (dynamic dimensions set to 1), runs it once with the fast kernels and
// once with the reference ones, and prints, per output, its name, shape and values, then
// the executed and dense MACs. Exit status 1 on a sluice::Error (its message on stderr).
#include <cmath>
#include <cstdio>
#include <sluice/sluice.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.onnx\n", argv[0]);
    return 2;
  }
  try {
    const sluice::Model model = sluice::Model::load(argv[1]);
    std::map<std::string, sluice::Tensor> inputs;
    for (const sluice::ValueInfo& in : model.inputs()) {
      sluice::Shape shape = in.shape;
      for (int64_t& d : shape) d = d < 0 ? 1 : d;
      sluice::Tensor t(sluice::DType::Float32, shape);
      float* x = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i) x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
      inputs.emplace(in.name, t);
    }
    for (const bool optimize : {true, false}) {
      sluice::Session session(model, {.threads = 1, .optimize = optimize});
      sluice::RunStats stats;
      const auto outputs = session.run(inputs, &stats);
      std::printf("%s\n", optimize ? "fast" : "reference");
      for (const auto& [name, t] : outputs) {
        std::printf("output %s %s", name.c_str(), sluice::shape_str(t.shape()).c_str());
        for (int64_t i = 0; i < t.numel(); ++i) std::printf(" %.9g", static_cast<double>(t.data<float>()[i]));
        std::printf("\n");
      }
      std::printf("macs %lld %lld\n", static_cast<long long>(stats.executed_macs), static_cast<long long>(stats.dense_macs));
    }
  } catch (const sluice::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
