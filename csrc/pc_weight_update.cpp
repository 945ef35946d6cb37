// Predictive-coding weight update, C++ part (math and the Python side:
// bpalts/ops/pc_weight_update.py). The GEMMs dW_l = e_l^T f~(x_{l-1}) / B run in MKL from Python
// (addmm_ in place when a learning rate is given); the presynaptic activity f(x_l) or
// f(x_l - e_l) comes from pc_act (csrc/pc_relax.cpp). This file holds the bias update:
//
//   pc_colmean: out_l[j] = (1/B) sum_b e_l[b, j] for every layer in one call, accumulated in double
//     in row order (deterministic), OpenMP over column blocks.
#include "common.h"

#include <algorithm>
#include <vector>

namespace bpalts {

namespace {

constexpr py::ssize_t kParallelMin = 1 << 15;
constexpr py::ssize_t kColBlock = 64;

template <typename T>
void pc_colmean(py::list errs, py::list outs) {
  if (errs.size() != outs.size()) throw py::value_error("errs and outs must have the same length");
  std::vector<Matrix<T>> E, O;
  for (size_t l = 0; l < errs.size(); ++l) {
    py::array e = errs[l].cast<py::array>(), o = outs[l].cast<py::array>();
    E.push_back(as_matrix<T>(e, "errs[l]", false));
    O.push_back(as_matrix<T>(o, "outs[l]", true));
    if (O.back().rows != 1 || O.back().cols != E.back().cols)
      throw py::value_error("outs[l] must be (1, n_l) for errs[l] of shape (batch, n_l)");
  }
  py::gil_scoped_release release;
  for (size_t l = 0; l < E.size(); ++l) {
    const py::ssize_t B = E[l].rows, n = E[l].cols;
    const py::ssize_t nblk = (n + kColBlock - 1) / kColBlock;
    const T* e = E[l].data;
    T* o = O[l].data;
#pragma omp parallel for schedule(static) if (B * n >= kParallelMin)
    for (py::ssize_t c = 0; c < nblk; ++c) {
      const py::ssize_t j0 = c * kColBlock, j1 = std::min(n, j0 + kColBlock);
      double acc[kColBlock] = {0.0};
      for (py::ssize_t b = 0; b < B; ++b) {
        const T* row = e + b * n;
#pragma omp simd
        for (py::ssize_t j = j0; j < j1; ++j) acc[j - j0] += static_cast<double>(row[j]);
      }
      for (py::ssize_t j = j0; j < j1; ++j) o[j] = static_cast<T>(acc[j - j0] / static_cast<double>(B));
    }
  }
}

}  // namespace

void bind_pc_weight_update(py::module_& m) {
  m.def(
      "pc_colmean",
      [](py::list errs, py::list outs) {
        if (errs.size() == 0) return;
        if (is_float64(errs[0].cast<py::array>())) pc_colmean<double>(errs, outs);
        else pc_colmean<float>(errs, outs);
      },
      py::arg("errs"), py::arg("outs"),
      "outs[l] (1, n_l) <- column means of errs[l] (batch, n_l), for every l (the bias updates).");
}

}  // namespace bpalts
