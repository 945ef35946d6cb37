// SoftHebb (soft winner-take-all) update, C++ part (see bpalts/ops/softwta_update.py for the
// math and the Python side).
//
// The two GEMMs run in MKL from Python:  U = X W^T (B x N)  and  H = Y~^T X (N x D).
// This file fuses everything around them:
//
//   softwta_gate  (one pass over U, rows in parallel), in place on U:
//       per row: max and first argmax of U, e = exp((U - max) / tau), Y = e / sum(e),
//       Y~ = +Y for the winner, -Y for every other unit (or +Y everywhere without anti-Hebbian),
//       column sums d_k = sum_b Y~_bk U_bk, and U <- Y~.
//     d is accumulated in double, per fixed chunk of kChunk rows (not per thread), and the chunk
//     partials are summed in chunk order: the result does not depend on the thread count.
//
//   softwta_apply (in place on W), with dW = H - d[:, None] * W never materialised:
//     max-abs scaling: pass 1 over rows computes |w_k| and max_j |dW_kj| per row; the global max
//     is the max of the row maxima; pass 2 applies W_k += rate_k / max * dW_k, recomputing dW
//     from H, d and W (still the old W: each row is read before it is written, by one thread).
//     Both passes share one OpenMP region (a barrier between them, not a second fork/join).
//     Without max-abs scaling the rows are independent and one pass does both.
//     rate_k = lr * sqrt(| |w_k| - 1 |) with the adaptive rate (norm of the old row), else lr.
//
// float and double (float's exp is vectorised by hand: GCC does not vectorise std::exp without
// -ffast-math); OpenMP over rows, serial below kParallelMin elements; C-contiguous numpy
// buffers (zero-copy views of tensors).
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace bpalts {

namespace {

// Rows per partial column sum in softwta_gate (a fixed partition: thread-count independent).
constexpr py::ssize_t kChunk = 16;
// Below this many elements a pass runs on the calling thread (a fork/join costs more).
constexpr py::ssize_t kParallelMin = 1 << 15;

// e[k] = exp((u[k] - m) * it) for k < n (arguments <= 0); returns sum_k e[k] in double.
template <typename T>
double exp_shifted(const T* u, T* e, py::ssize_t n, T m, T it) {
  double s = 0.0;
  for (py::ssize_t k = 0; k < n; ++k) {
    const T v = std::exp((u[k] - m) * it);
    e[k] = v;
    s += v;
  }
  return s;
}

// float: 8 lanes at a time with GCC/Clang vector extensions (no intrinsics), Cephes' expf
// (range reduction by ln 2, degree-5 polynomial, about 1 ulp on [-87, 0]); arguments below
// -87.3 give 0 (exp there is below the smallest normal float). The tail goes through the same
// vector code via a padded copy, so every element gets the same formula.
using vec::v4d;
using vec::v8f;
using vec::v8i;
using vec::exp_nonpositive;

template <>
double exp_shifted<float>(const float* u, float* e, py::ssize_t n, float m, float it) {
  v4d s0{}, s1{};
  auto block = [&](const float* src, float* dst) {
    v8f x;
    std::memcpy(&x, src, sizeof(x));
    const v8f v = exp_nonpositive((x - m) * it);
    std::memcpy(dst, &v, sizeof(v));
    s0 += v4d{v[0], v[1], v[2], v[3]};
    s1 += v4d{v[4], v[5], v[6], v[7]};
  };
  py::ssize_t k = 0;
  for (; k + 8 <= n; k += 8) block(u + k, e + k);
  if (k < n) {
    alignas(32) float src[8], dst[8];
    for (int i = 0; i < 8; ++i) src[i] = k + i < n ? u[k + i] : m - 1000.0f;  // pad: exp -> 0
    block(src, dst);
    for (py::ssize_t i = 0; k + i < n; ++i) e[k + i] = dst[i];
  }
  const v4d t = s0 + s1;
  return (t[0] + t[1]) + (t[2] + t[3]);
}

// The first k with u[k] == m, or n if there is none (a NaN row). float: 8 compares at a time.
template <typename T>
inline py::ssize_t first_equal(const T* u, py::ssize_t n, T m) {
  py::ssize_t k = 0;
  while (k < n && u[k] != m) ++k;
  return k;
}

template <>
inline py::ssize_t first_equal<float>(const float* u, py::ssize_t n, float m) {
  py::ssize_t k = 0;
  for (; k + 8 <= n; k += 8) {
    v8f x;
    std::memcpy(&x, u + k, sizeof(x));
    const v8i eq = x == m;
    bool any = false;
    for (int l = 0; l < 8; ++l) any |= eq[l] != 0;
    if (any) break;
  }
  while (k < n && u[k] != m) ++k;
  return k;
}

template <typename T>
void softwta_gate(py::array& U_, py::array& d_, double inv_tau, bool anti_hebbian) {
  auto U = as_matrix<T>(U_, "U", true);
  auto d = as_matrix<T>(d_, "d", true);
  const py::ssize_t B = U.rows, N = U.cols;
  if (d.rows != 1 || d.cols != N) {
    throw py::value_error("d must be (1, units) for U of shape (batch, units)");
  }
  const py::ssize_t n_chunks = (B + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(n_chunks * N));
  const T it = static_cast<T>(inv_tau);
  const T neg = anti_hebbian ? T(-1) : T(1);
  py::gil_scoped_release release;
#pragma omp parallel if (B * N >= kParallelMin)
  {
    std::vector<T> e(static_cast<size_t>(N));
#pragma omp for schedule(static)
    for (py::ssize_t c = 0; c < n_chunks; ++c) {
      double* p = part.data() + c * N;
      std::fill(p, p + N, 0.0);
      const py::ssize_t b_end = std::min(B, (c + 1) * kChunk);
      for (py::ssize_t b = c * kChunk; b < b_end; ++b) {
        T* u = U.data + b * N;
        // Row max and its first index (torch.argmax's choice on ties).
        T m = u[0];
#pragma omp simd reduction(max : m)
        for (py::ssize_t k = 1; k < N; ++k) m = u[k] > m ? u[k] : m;
        py::ssize_t win = first_equal(u, N, m);
        if (win == N) {  // nothing equals the max: the row holds a NaN (torch.argmax: the first)
          win = 0;
          while (win < N - 1 && !std::isnan(u[win])) ++win;
        }
        const double s = exp_shifted<T>(u, e.data(), N, m, it);
        const T inv_s = static_cast<T>(1.0 / s);
        const T sn = neg * inv_s;  // losers: -Y (anti-Hebbian) or +Y
#pragma omp simd
        for (py::ssize_t k = 0; k < win; ++k) {
          const T y = e[k] * sn;
          p[k] += static_cast<double>(y) * static_cast<double>(u[k]);
          u[k] = y;
        }
        {
          const T y = e[win] * inv_s;  // the winner keeps +Y
          p[win] += static_cast<double>(y) * static_cast<double>(u[win]);
          u[win] = y;
        }
#pragma omp simd
        for (py::ssize_t k = win + 1; k < N; ++k) {
          const T y = e[k] * sn;
          p[k] += static_cast<double>(y) * static_cast<double>(u[k]);
          u[k] = y;
        }
      }
    }
    // Column sums of the chunk partials, in chunk order (deterministic).
#pragma omp for schedule(static)
    for (py::ssize_t k = 0; k < N; ++k) {
      double acc = 0.0;
      for (py::ssize_t c = 0; c < n_chunks; ++c) acc += part[static_cast<size_t>(c * N + k)];
      d.data[k] = static_cast<T>(acc);
    }
  }
}

template <typename T>
inline double row_rate(const T* w, py::ssize_t D, double lr) {
  double n2 = 0.0;
#pragma omp simd reduction(+ : n2)
  for (py::ssize_t j = 0; j < D; ++j) n2 += static_cast<double>(w[j]) * static_cast<double>(w[j]);
  return lr * std::sqrt(std::fabs(std::sqrt(n2) - 1.0));
}

template <typename T>
inline void row_apply(T* w, const T* h, T dk, T r, py::ssize_t D) {
#pragma omp simd
  for (py::ssize_t j = 0; j < D; ++j) w[j] += r * (h[j] - dk * w[j]);
}

template <typename T>
void softwta_apply(py::array& W_, py::array& H_, py::array& d_, double lr, bool adaptive_lr,
                   bool max_normalize, double inv_batch) {
  auto W = as_matrix<T>(W_, "W", true);
  auto H = as_matrix<T>(H_, "H", false);
  auto d = as_matrix<T>(d_, "d", false);
  const py::ssize_t N = W.rows, D = W.cols;
  if (H.rows != N || H.cols != D) throw py::value_error("H must have W's shape (units x features)");
  if (d.rows != 1 || d.cols != N) throw py::value_error("d must be (1, units)");
  py::gil_scoped_release release;
  if (!max_normalize) {
    // Rows are independent: norm of the old row, then its update, while it is in cache.
#pragma omp parallel for schedule(static) if (N * D >= kParallelMin)
    for (py::ssize_t k = 0; k < N; ++k) {
      T* w = W.data + k * D;
      const double r = (adaptive_lr ? row_rate(w, D, lr) : lr) * inv_batch;
      row_apply(w, H.data + k * D, d.data[k], static_cast<T>(r), D);
    }
    return;
  }
  std::vector<double> rate(static_cast<size_t>(N));
  std::vector<T> row_max(static_cast<size_t>(N));
#pragma omp parallel if (N * D >= kParallelMin)
  {
    // Pass 1: per row, the rate (from the old weights) and max_j |H_kj - d_k W_kj|.
#pragma omp for schedule(static)
    for (py::ssize_t k = 0; k < N; ++k) {
      const T* w = W.data + k * D;
      const T* h = H.data + k * D;
      const T dk = d.data[k];
      double n2 = 0.0;
      T mx = T(0);
#pragma omp simd reduction(+ : n2) reduction(max : mx)
      for (py::ssize_t j = 0; j < D; ++j) {
        const T wj = w[j];
        n2 += static_cast<double>(wj) * static_cast<double>(wj);
        const T v = std::fabs(h[j] - dk * wj);
        mx = v > mx ? v : mx;
      }
      rate[k] = adaptive_lr ? lr * std::sqrt(std::fabs(std::sqrt(n2) - 1.0)) : lr;
      row_max[k] = mx;
    }
    // (implicit barrier) Every thread folds the row maxima itself: no second fork/join.
    T gmax = T(0);
    for (py::ssize_t k = 0; k < N; ++k) gmax = std::max(gmax, row_max[k]);
    const double inv_max = 1.0 / (static_cast<double>(gmax) + 1e-30);
    // Pass 2: the apply, dW recomputed from H, d and the (still old) row of W.
#pragma omp for schedule(static)
    for (py::ssize_t k = 0; k < N; ++k) {
      row_apply(W.data + k * D, H.data + k * D, d.data[k], static_cast<T>(rate[k] * inv_max), D);
    }
  }
}

}  // namespace

void bind_softwta_update(py::module_& m) {
  m.def(
      "softwta_gate",
      [](py::array U, py::array d, double inv_tau, bool anti_hebbian) {
        if (is_float64(U)) softwta_gate<double>(U, d, inv_tau, anti_hebbian);
        else softwta_gate<float>(U, d, inv_tau, anti_hebbian);
      },
      py::arg("U"), py::arg("d"), py::arg("inv_tau"), py::arg("anti_hebbian"),
      "In place: U (batch, units) <- Y~ = sign * softmax(U * inv_tau) over units (sign -1 for "
      "every unit but the row's argmax when anti_hebbian); d (1, units) <- sum_b Y~ * U.");
  m.def(
      "softwta_apply",
      [](py::array W, py::array H, py::array d, double lr, bool adaptive_lr, bool max_normalize,
         double inv_batch) {
        if (is_float64(W))
          softwta_apply<double>(W, H, d, lr, adaptive_lr, max_normalize, inv_batch);
        else
          softwta_apply<float>(W, H, d, lr, adaptive_lr, max_normalize, inv_batch);
      },
      py::arg("W"), py::arg("H"), py::arg("d"), py::arg("lr"), py::arg("adaptive_lr"),
      py::arg("max_normalize"), py::arg("inv_batch"),
      "In place: W += rate * dW / s with dW = H - d^T * W, s = max|dW| (+1e-30) when "
      "max_normalize else 1 / inv_batch, rate_k = lr * sqrt(| |W_k| - 1 |) when adaptive_lr "
      "else lr (norms of the old W).");
}

}  // namespace bpalts
