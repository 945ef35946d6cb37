// Hebbian update, C++ part (see bpalts/ops/hebbian_update.py for the math and the Python side).
//
// The hierarchical rules (gha, hpca) are computed block by block of units:
//   dW_i = G_i^T R_i - tril(G_i^T G_i) W_i,   R_i = X - sum_{j<i} G_j W_j
// The GEMMs G_i^T R_i, G_i^T G_i and the residual update run in MKL from Python; this file fuses
// the rest: the triangular product tril(C) W_i, the subtraction and the in-place apply
//   W_i += scale * (H - tril(C) W_i)
// Rows are processed from the last to the first, so the rows a row depends on (m <= n) are
// still the old weights when it is computed: the update is in place without a copy of W_i.
// OpenMP splits the columns (features); each thread owns strips of columns for every row.
#include "common.h"

#include <algorithm>
#include <cstring>

namespace bpalts {

namespace {

// Register tile: kRows rows x 2 vectors of 32 bytes (16 floats / 8 doubles) of accumulators,
// the shape of a classic 6x16 GEMM micro-kernel: 12 accumulators + 2 loads + 1 broadcast fit in
// the 16 AVX2 registers. GCC vector extensions keep this portable (no intrinsics).
constexpr int kRows = 6;

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int lanes = 32 / static_cast<int>(sizeof(T));
};

template <typename T>
inline typename Vec<T>::type vload(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void vstore(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// One strip of columns [c0, c0 + width): W[:, strip] += scale * (H[:, strip] - tril(C) W[:, strip]).
// Row groups are visited last to first, so every source row m <= n is still the old weight.
template <typename T>
void tril_apply_strip(T* W, const T* H, const T* C, py::ssize_t k, py::ssize_t D, py::ssize_t c0,
                      py::ssize_t width, T scale) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  constexpr int S = 2 * L;  // strip width
  alignas(64) T acc[kRows][S];
  const py::ssize_t n_groups = (k + kRows - 1) / kRows;
  for (py::ssize_t g = n_groups - 1; g >= 0; --g) {
    const py::ssize_t r0 = g * kRows;
    const int rows = static_cast<int>(std::min<py::ssize_t>(kRows, k - r0));
    // Rows past k (only in the last group) read row k-1 of C: harmless, their results are dropped.
    const T* crow[kRows];
    for (int r = 0; r < kRows; ++r) crow[r] = C + std::min<py::ssize_t>(r0 + r, k - 1) * k;
    if (width == S) {
      V a0[kRows], a1[kRows];
      for (int r = 0; r < kRows; ++r) { a0[r] = V{} ; a1[r] = V{}; }
      for (py::ssize_t m = 0; m < r0; ++m) {
        const T* w = W + m * D + c0;
        const V w0 = vload<T>(w), w1 = vload<T>(w + L);
#pragma GCC unroll 6
        for (int r = 0; r < kRows; ++r) {
          const T c = crow[r][m];
          a0[r] += c * w0;
          a1[r] += c * w1;
        }
      }
      for (int r = 0; r < kRows; ++r) { vstore<T>(acc[r], a0[r]); vstore<T>(acc[r] + L, a1[r]); }
    } else {
      for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < S; ++c) acc[r][c] = T(0);
      for (py::ssize_t m = 0; m < r0; ++m) {
        const T* w = W + m * D + c0;
        for (int r = 0; r < kRows; ++r) {
          const T a = crow[r][m];
          for (py::ssize_t c = 0; c < width; ++c) acc[r][c] += a * w[c];
        }
      }
    }
    // Triangle inside the group: row r0+r takes source rows r0 .. r0+r.
    for (int r = 0; r < rows; ++r) {
      for (py::ssize_t m = r0; m <= r0 + r; ++m) {
        const T a = crow[r][m];
        const T* w = W + m * D + c0;
        for (py::ssize_t c = 0; c < width; ++c) acc[r][c] += a * w[c];
      }
    }
    // Apply: every read of this group's old rows is done.
    for (int r = 0; r < rows; ++r) {
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
  constexpr py::ssize_t strip = 2 * Vec<T>::lanes;
  const py::ssize_t n_strips = (D + strip - 1) / strip;
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
  for (py::ssize_t s = 0; s < n_strips; ++s) {
    const py::ssize_t c0 = s * strip;
    tril_apply_strip<T>(W.data, H.data, C.data, k, D, c0, std::min(strip, D - c0), static_cast<T>(scale));
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
