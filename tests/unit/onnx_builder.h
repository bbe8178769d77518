// Builds small ONNX models in memory for tests (structure checks, error paths).
#pragma once

#include <onnx/onnx_pb.h>

#include <random>
#include <string>
#include <vector>

#include "sluice/sluice.h"

namespace sluice::testing {

class OnnxBuilder {
 public:
  explicit OnnxBuilder(int64_t opset = 13) {
    model_.set_ir_version(8);
    auto* imp = model_.add_opset_import();
    imp->set_domain("");
    imp->set_version(opset);
    model_.mutable_graph()->set_name("test");
  }

  OnnxBuilder& input(const std::string& name, const Shape& shape, int elem = onnx::TensorProto::FLOAT) {
    value_info(model_.mutable_graph()->add_input(), name, shape, elem);
    return *this;
  }
  OnnxBuilder& output(const std::string& name, const Shape& shape = {}, int elem = onnx::TensorProto::FLOAT) {
    auto* vi = model_.mutable_graph()->add_output();
    vi->set_name(name);
    vi->mutable_type()->mutable_tensor_type()->set_elem_type(elem);
    if (!shape.empty()) value_info(vi, name, shape, elem);
    return *this;
  }
  OnnxBuilder& init(const std::string& name, const Shape& shape, const std::vector<float>& data) {
    auto* t = new_initializer(name, shape, onnx::TensorProto::FLOAT);
    for (float v : data) t->add_float_data(v);
    return *this;
  }
  OnnxBuilder& init_f64(const std::string& name, const Shape& shape, const std::vector<double>& data) {
    auto* t = new_initializer(name, shape, onnx::TensorProto::DOUBLE);
    for (double v : data) t->add_double_data(v);
    return *this;
  }
  OnnxBuilder& init_i64(const std::string& name, const Shape& shape, const std::vector<int64_t>& data) {
    auto* t = new_initializer(name, shape, onnx::TensorProto::INT64);
    for (int64_t v : data) t->add_int64_data(v);
    return *this;
  }
  OnnxBuilder& init_i32(const std::string& name, const Shape& shape, const std::vector<int32_t>& data) {
    auto* t = new_initializer(name, shape, onnx::TensorProto::INT32);
    for (int32_t v : data) t->add_int32_data(v);
    return *this;
  }
  // Random initializer, seeded.
  OnnxBuilder& init_random(const std::string& name, const Shape& shape, float scale = 1.f, float offset = 0.f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    std::normal_distribution<float> dist(0.f, scale);
    for (auto& x : v) x = dist(rng_) + offset;
    return init(name, shape, v);
  }
  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& in, const std::vector<std::string>& out,
                        const std::string& name = "") {
    auto* n = model_.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(name.empty() ? op + std::to_string(model_.graph().node_size()) : name);
    for (const auto& i : in) n->add_input(i);
    for (const auto& o : out) n->add_output(o);
    return *n;
  }
  static void attr_ints(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void attr_int(onnx::NodeProto& n, const std::string& name, int64_t v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr_str(onnx::NodeProto& n, const std::string& name, const std::string& v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  }
  static void attr_float(onnx::NodeProto& n, const std::string& name, float v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  onnx::ModelProto& proto() { return model_; }
  std::string bytes() const { return model_.SerializeAsString(); }
  Model load(const std::string& name = "test.onnx") const {
    std::string b = bytes();
    return Model::load_from_memory(b.data(), b.size(), name);
  }

  // A value_info annotation for an intermediate value.
  OnnxBuilder& annotate(const std::string& name, const Shape& shape, int elem = onnx::TensorProto::FLOAT) {
    value_info(model_.mutable_graph()->add_value_info(), name, shape, elem);
    return *this;
  }

 private:
  onnx::TensorProto* new_initializer(const std::string& name, const Shape& shape, int type) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    for (int64_t d : shape) t->add_dims(d);
    return t;
  }
  static void value_info(onnx::ValueInfoProto* vi, const std::string& name, const Shape& shape, int elem) {
    vi->set_name(name);
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem);
    auto* s = tt->mutable_shape();
    s->clear_dim();
    for (int64_t d : shape) {
      auto* dim = s->add_dim();
      if (d >= 0) dim->set_dim_value(d); else dim->set_dim_param("batch");
    }
  }
  onnx::ModelProto model_;
  std::mt19937 rng_{42};
};

inline Tensor random_tensor(const Shape& shape, uint32_t seed = 1, float scale = 1.f) {
  Tensor t(DType::Float32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// max |a - b| / max(1, max |b|)
inline double normalized_error(const Tensor& a, const Tensor& b) {
  double err = 0, scale = 1;
  for (int64_t i = 0; i < b.numel(); ++i) {
    err = std::max(err, static_cast<double>(std::abs(a.data<float>()[i] - b.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::abs(b.data<float>()[i])));
  }
  return err / scale;
}

}  // namespace sluice::testing
