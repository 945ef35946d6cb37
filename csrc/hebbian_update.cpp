// Hebbian update, C++ part (see bpalts/ops/hebbian_update.py for the math and the Python side).
//
// The hierarchical rules (gha, hpca) are computed block by block of units:
//   dW_i = G_i^T R_i - tril(G_i^T G_i) W_i,   R_i = X - sum_{j<i} G_j W_j
// The GEMMs G_i^T R_i, G_i^T G_i and the residual update run in MKL from Python; this file fuses
// the rest: the triangular product tril(C) W_i, the subtraction and the in-place apply
//   W_i += scale * (H - tril(C) W_i)
// Rows are processed from the last to the first, so the rows a row depends on (m <= n) are
// still the old weights when it is computed: the update is in place without a copy of W_i.
// OpenMP splits the columns (features); each thread owns a strip of columns for every row.
#include "common.h"

#include <algorithm>
#include <cstring>

namespace bpalts {

namespace {

constexpr py::ssize_t kStrip = 32;  // columns per inner tile: 4 rows x 32 floats of accumulators

template <typename T>
void tril_apply_strip(T* W, const T* H, const T* C, py::ssize_t k, py::ssize_t D, py::ssize_t c0,
                      py::ssize_t width, T scale) {
  alignas(64) T acc[4][kStrip];
  // Row groups of 4, last group first (it may be partial).
  py::ssize_t n_groups = (k + 3) / 4;
  for (py::ssize_t g = n_groups - 1; g >= 0; --g) {
    const py::ssize_t r0 = g * 4;
    const py::ssize_t rows = std::min<py::ssize_t>(4, k - r0);
    for (py::ssize_t r = 0; r < 4; ++r)
      for (py::ssize_t c = 0; c < kStrip; ++c) acc[r][c] = T(0);
    // Full part: source rows m < r0 feed every row of the group.
    for (py::ssize_t m = 0; m < r0; ++m) {
      const T* w = W + m * D + c0;
      const T a0 = C[(r0 + 0) * k + m];
      const T a1 = rows > 1 ? C[(r0 + 1) * k + m] : T(0);
      const T a2 = rows > 2 ? C[(r0 + 2) * k + m] : T(0);
      const T a3 = rows > 3 ? C[(r0 + 3) * k + m] : T(0);
      if (width == kStrip) {
#pragma omp simd
        for (py::ssize_t c = 0; c < kStrip; ++c) {
          const T v = w[c];
          acc[0][c] += a0 * v;
          acc[1][c] += a1 * v;
          acc[2][c] += a2 * v;
          acc[3][c] += a3 * v;
        }
      } else {
        for (py::ssize_t c = 0; c < width; ++c) {
          const T v = w[c];
          acc[0][c] += a0 * v;
          acc[1][c] += a1 * v;
          acc[2][c] += a2 * v;
          acc[3][c] += a3 * v;
        }
      }
    }
    // Triangle inside the group: row r0+r takes source rows r0 .. r0+r.
    for (py::ssize_t r = 0; r < rows; ++r) {
      for (py::ssize_t m = r0; m <= r0 + r; ++m) {
        const T a = C[(r0 + r) * k + m];
        const T* w = W + m * D + c0;
        for (py::ssize_t c = 0; c < width; ++c) acc[r][c] += a * w[c];
      }
    }
    // Apply: all reads of this group's old rows are done.
    for (py::ssize_t r = 0; r < rows; ++r) {
      T* w = W + (r0 + r) * D + c0;
      const T* h = H + (r0 + r) * D + c0;
      for (py::ssize_t c = 0; c < width; ++c) w[c] += scale * (h[c] - acc[r][c]);
    }
  }
}

template <typename T>
void tril_apply(py::array& W_, py::array& H_, py::array& C_, double scale) {
  auto W = as_matrix<T>(W_, "W", true);
  auto H = as_matrix<T>(H_, "H", false);
  auto C = as_matrix<T>(C_, "C", false);
  const py::ssize_t k = W.rows, D = W.cols;
  if (H.rows != k || H.cols != D) throw py::value_error("H must have W's shape (block units x features)");
  if (C.rows != k || C.cols != k) throw py::value_error("C must be (block units x block units)");
  const py::ssize_t n_strips = (D + kStrip - 1) / kStrip;
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
  for (py::ssize_t s = 0; s < n_strips; ++s) {
    const py::ssize_t c0 = s * kStrip;
    tril_apply_strip<T>(W.data, H.data, C.data, k, D, c0, std::min(kStrip, D - c0), static_cast<T>(scale));
  }
}

template <typename T>
void axpy(py::array& Y_, py::array& X_, double a) {
  auto Y = as_matrix<T>(Y_, "W", true);
  auto X = as_matrix<T>(X_, "dW", false);
  if (X.rows != Y.rows || X.cols != Y.cols) throw py::value_error("dW must have W's shape");
  const py::ssize_t n = Y.rows * Y.cols;
  const T s = static_cast<T>(a);
  py::gil_scoped_release release;
#pragma omp parallel for simd schedule(static)
  for (py::ssize_t i = 0; i < n; ++i) Y.data[i] += s * X.data[i];
}

}  // namespace

void bind_hebbian_update(py::module_& m) {
  m.def(
      "hebbian_tril_apply",
      [](py::array W, py::array H, py::array C, double scale) {
        if (is_float64(W)) tril_apply<double>(W, H, C, scale);
        else tril_apply<float>(W, H, C, scale);
      },
      py::arg("W"), py::arg("H"), py::arg("C"), py::arg("scale"),
      "In place: W += scale * (H - tril(C) @ W). W, H: (k, D); C: (k, k); C-contiguous, one dtype.");
  m.def(
      "axpy_inplace",
      [](py::array W, py::array dW, double a) {
        if (is_float64(W)) axpy<double>(W, dW, a);
        else axpy<float>(W, dW, a);
      },
      py::arg("W"), py::arg("dW"), py::arg("a"), "In place: W += a * dW.");
}

}  // namespace bpalts
