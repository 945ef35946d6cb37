// Hebbian update, C++ part (see bpalts/ops/hebbian_update.py for the math and the Python side).
//
// Dense hierarchical rules (gha, hpca) are computed block by block of units:
//   dW_i = G_i^T R_i - tril(G_i^T G_i) W_i,   R_i = X - sum_{j<i} G_j W_j
// The GEMMs G_i^T R_i, G_i^T G_i and the residual update run in MKL from Python; this file fuses
// the rest: the triangular product tril(C) W_i, the subtraction and the in-place apply
//   W_i += scale * (H - tril(C) W_i)
// Rows are processed from the last to the first, so the rows a row depends on (m <= n) are
// still the old weights when it is computed: the update is in place without a copy of W_i.
// OpenMP splits the columns (features); each thread owns strips of columns for every row.
//
// BCM (bcm_modulate): one pass over Y^T (N x B: the Python side computes the currents
// units-major, U^T = W X^T, and the update as the plain product G^T X, both faster in MKL than
// X W^T and the transposed-A product) that writes G^T = Y^T * (Y^T - theta) in place and
// updates theta += rate * (mean_b Y^2 - theta); OpenMP over units.
//
// Competitive rules (sparse_apply: instar = top-k winners, krotov = +1 winner / -delta k-th):
// given the currents U (B x N, from MKL), rank each sample's units (OpenMP over samples), group
// the selected (sample, unit) pairs by unit with a counting sort (samples stay in order, so every
// sum has a fixed order: deterministic for any thread count), and update only the touched rows
// (OpenMP over units, each row owned by one thread):
//   w_n += scale * (sum_j g_j x_{b_j} - (sum_j h_j) w_n),  h = g (instar) or g * U (krotov).
#include "common.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace bpalts {

namespace {

// Below this many elements a pass runs on the calling thread (a fork/join costs more).
constexpr py::ssize_t kParallelMin = 1 << 15;

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

// ---------------------------------------------------------------- BCM modulation

// Yt (N x B, units-major: Y^T) <- Yt * (Yt - theta[:, None]); theta (1 x N) += rate *
// (mean_b Yt^2 - theta). One contiguous row per unit: OpenMP over units.
template <typename T>
void bcm_modulate(py::array& Yt_, py::array& theta_, double rate) {
  auto Yt = as_matrix<T>(Yt_, "Yt", true);
  auto th = as_matrix<T>(theta_, "theta", true);
  const py::ssize_t N = Yt.rows, B = Yt.cols;
  if (th.rows != 1 || th.cols != N)
    throw py::value_error("theta must be (1, units) with units = Yt's rows");
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (N * B >= kParallelMin)
  for (py::ssize_t k = 0; k < N; ++k) {
    T* y = Yt.data + k * B;
    const T t = th.data[k];
    double sq = 0.0;
#pragma omp simd reduction(+ : sq)
    for (py::ssize_t b = 0; b < B; ++b) {
      const T v = y[b];
      sq += static_cast<double>(v) * static_cast<double>(v);
      y[b] = v * (v - t);
    }
    th.data[k] = static_cast<T>(t + rate * (sq / static_cast<double>(B) - t));
  }
}

// ---------------------------------------------------------------- competitive (sparse) rules

// The k largest entries of u[0..N), in rank order: value descending, ties to the lower index
// (the order of repeated argmax, which the reference uses). out gets k indices.
template <typename T>
void rank_row(const T* u, py::ssize_t N, int k, int* out, std::vector<int>& scratch) {
  if (k == 1) {
    py::ssize_t best = 0;
    T bv = u[0];
    for (py::ssize_t i = 1; i < N; ++i)
      if (u[i] > bv) { bv = u[i]; best = i; }
    out[0] = static_cast<int>(best);
    return;
  }
  if (k == 2) {  // krotov's default: the best two in registers
    py::ssize_t i1 = 0, i2 = 1;
    T v1 = u[0], v2 = u[1];
    if (v2 > v1) { std::swap(v1, v2); std::swap(i1, i2); }
    for (py::ssize_t i = 2; i < N; ++i) {
      const T v = u[i];
      if (v > v2) {
        if (v > v1) { v2 = v1; i2 = i1; v1 = v; i1 = i; }
        else { v2 = v; i2 = i; }
      }
    }
    out[0] = static_cast<int>(i1);
    out[1] = static_cast<int>(i2);
    return;
  }
  if (k <= 32) {
    // Sorted buffer of the best k so far. Later indices only enter when strictly greater, so an
    // equal value earlier in the row keeps its place ahead.
    T vals[32];
    int n = 0;
    for (py::ssize_t i = 0; i < N; ++i) {
      const T v = u[i];
      int pos;
      if (n < k) {
        pos = n++;
      } else if (v > vals[k - 1]) {
        pos = k - 1;
      } else {
        continue;
      }
      while (pos > 0 && v > vals[pos - 1]) {
        vals[pos] = vals[pos - 1];
        out[pos] = out[pos - 1];
        --pos;
      }
      vals[pos] = v;
      out[pos] = static_cast<int>(i);
    }
    return;
  }
  scratch.resize(N);
  std::iota(scratch.begin(), scratch.end(), 0);
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(),
                    [u](int a, int b) { return u[a] > u[b] || (u[a] == u[b] && a < b); });
  std::copy(scratch.begin(), scratch.begin() + k, out);
}

// mode 0 (topk / instar): the k best units of each sample get g = 1, h = 1.
// mode 1 (rank / krotov): the best gets g = 1, the k-th g = -delta; h = g * U.
template <typename T>
void sparse_apply(py::array& W_, py::array& X_, py::array& U_, int mode, int k, double delta,
                  double scale) {
  auto W = as_matrix<T>(W_, "W", true);
  auto X = as_matrix<T>(X_, "X", false);
  auto U = as_matrix<T>(U_, "U", false);
  const py::ssize_t N = W.rows, D = W.cols, B = X.rows;
  if (X.cols != D) throw py::value_error("X must be (batch, features) with W's features");
  if (U.rows != B || U.cols != N) throw py::value_error("U must be (batch, units)");
  if (mode != 0 && mode != 1) throw py::value_error("mode must be 0 (topk) or 1 (rank)");
  if (k < (mode == 1 ? 2 : 1) || k > N) throw py::value_error("k out of range for this mode");
  const int S = mode == 0 ? k : 2;  // selected units per sample
  const py::ssize_t E = B * S;
  std::vector<int> unit(E);
  std::vector<T> gval(E), hval(E);
  py::gil_scoped_release release;

  // 1. Rank every sample's units.
#pragma omp parallel
  {
    std::vector<int> ranked(k), scratch;
#pragma omp for schedule(static)
    for (py::ssize_t b = 0; b < B; ++b) {
      const T* u = U.data + b * N;
      rank_row<T>(u, N, k, ranked.data(), scratch);
      if (mode == 0) {
        for (int s = 0; s < k; ++s) {
          unit[b * S + s] = ranked[s];
          gval[b * S + s] = T(1);
          hval[b * S + s] = T(1);
        }
      } else {
        const int top = ranked[0], kth = ranked[k - 1];
        unit[b * S] = top;
        gval[b * S] = T(1);
        hval[b * S] = u[top];
        unit[b * S + 1] = kth;
        gval[b * S + 1] = static_cast<T>(-delta);
        hval[b * S + 1] = static_cast<T>(-delta) * u[kth];
      }
    }
  }

  // 2. Counting sort of the entries by unit (entries stay in sample order within a unit).
  std::vector<py::ssize_t> start(N + 1, 0);
  for (py::ssize_t e = 0; e < E; ++e) ++start[unit[e] + 1];
  std::vector<int> touched;
  for (py::ssize_t n = 0; n < N; ++n) {
    if (start[n + 1] > 0) touched.push_back(static_cast<int>(n));
    start[n + 1] += start[n];
  }
  std::vector<py::ssize_t> fill(start.begin(), start.end() - 1);
  std::vector<int> order(E);
  for (py::ssize_t e = 0; e < E; ++e) order[fill[unit[e]]++] = static_cast<int>(e);

  // 3. Update the touched rows; each row is owned by one thread.
  const T sc = static_cast<T>(scale);
  const py::ssize_t n_touched = static_cast<py::ssize_t>(touched.size());
#pragma omp parallel
  {
    std::vector<T> acc(D);
#pragma omp for schedule(dynamic, 4)
    for (py::ssize_t t = 0; t < n_touched; ++t) {
      const int n = touched[t];
      T hs = T(0);
      std::fill(acc.begin(), acc.end(), T(0));
      for (py::ssize_t j = start[n]; j < start[n + 1]; ++j) {
        const int e = order[j];
        const T g = gval[e];
        hs += hval[e];
        const T* x = X.data + (e / S) * D;
        T* a = acc.data();
#pragma omp simd
        for (py::ssize_t c = 0; c < D; ++c) a[c] += g * x[c];
      }
      T* w = W.data + static_cast<py::ssize_t>(n) * D;
      const T* a = acc.data();
#pragma omp simd
      for (py::ssize_t c = 0; c < D; ++c) w[c] += sc * (a[c] - hs * w[c]);
    }
  }
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
      "hebbian_bcm_modulate",
      [](py::array Yt, py::array theta, double rate) {
        if (is_float64(Yt)) bcm_modulate<double>(Yt, theta, rate);
        else bcm_modulate<float>(Yt, theta, rate);
      },
      py::arg("Yt"), py::arg("theta"), py::arg("rate"),
      "In place: Yt <- Yt * (Yt - theta^T); theta += rate * (mean over columns of Yt^2 - theta). "
      "Yt: (N, B), units-major; theta: (1, N); C-contiguous, one dtype.");
  m.def(
      "hebbian_sparse_apply",
      [](py::array W, py::array X, py::array U, int mode, int k, double delta, double scale) {
        if (is_float64(W)) sparse_apply<double>(W, X, U, mode, k, delta, scale);
        else sparse_apply<float>(W, X, U, mode, k, delta, scale);
      },
      py::arg("W"), py::arg("X"), py::arg("U"), py::arg("mode"), py::arg("k"), py::arg("delta"),
      py::arg("scale"),
      "In place, competitive rules: rank each row of U (B, N); mode 0 (topk): the k best units get "
      "g = 1, h = 1; mode 1 (rank): the best g = 1, the k-th g = -delta, h = g * U. Then only the "
      "selected rows change: W[n] += scale * (sum g x_b - (sum h) W[n]). C-contiguous, one dtype.");
}

}  // namespace bpalts
