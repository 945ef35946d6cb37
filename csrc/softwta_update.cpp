// SoftHebb (soft winner-take-all) update, C++ part (see bpalts/ops/softwta_update.py for the
// math and the Python side).
//
// The dense op runs its two GEMMs in MKL from Python, in the units-major layout:
//   U^T = W X^T (N x B)   and   H = Y~^T X (N x D), with U^T overwritten by Y~^T in between.
// At the shape (B256 784->1024, two threads) MKL runs both faster than U = X W^T and the
// transposed-A product U^T X; with the column gate, the C++ path ran 2.5-3.4% faster than the
// row-major one (interleaved in one process). This file fuses everything around them:
//
//   softwta_gate_columns (the dense op), in place on U^T: the softmax runs down each column.
//     Blocks of kLanes columns in parallel; per block, three passes down its rows: the max and
//     its first index per column; e = exp((u - max) / tau) into a per-thread buffer and
//     s = sum_k e in double; then Y~ = +e/s for the column's winner and -e/s for the other units
//     (+e/s everywhere without anti-Hebbian), U^T <- Y~ and the block's partials of
//     d_k = sum_b Y~_kb U_kb in double, summed afterwards in block order.
//   softwta_gate (the convolutional op, whose U is pixels x channels), in place on U: the same
//     gate along rows; d accumulated in double per fixed chunk of kChunk rows, summed in chunk
//     order.
//   Both partitions are fixed, not per thread: the results do not depend on the thread count.
//
//   softwta_apply (in place on W), with dW = H - d[:, None] * W never materialised:
//     max-abs scaling: pass 1 over rows computes |w_k| and max_j |dW_kj| per row; the global max
//     is the max of the row maxima; pass 2 applies W_k += rate_k / max * dW_k, recomputing dW
//     from H, d and W (still the old W: each row is read before it is written, by one thread).
//     Each thread keeps one block of rows for both passes and runs pass 2 backwards over it, so
//     the rows pass 1 read last are still in its cache (about 10% off the apply). One OpenMP
//     region (a barrier between the passes, not a second fork/join).
//     Without max-abs scaling the rows are independent and one pass does both.
//     rate_k = lr * sqrt(| |w_k| - 1 |) with the adaptive rate (norm of the old row), else lr.
//
// float and double (float's exp is vectorised by hand: GCC does not vectorise std::exp without
// -ffast-math); OpenMP, serial below kParallelMin elements; C-contiguous numpy buffers
// (zero-copy views of tensors).
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

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

// softwta_gate_columns: columns per block. 32 floats (two cache lines) per row of a block: at
// B256 784->1024 narrower blocks ran slower (more strided rows), and 64 (four blocks) was slower
// at two threads.
constexpr py::ssize_t kLanes = 32;

// One block of kLanes columns of U^T (rows k = 0..N-1 at stride ld), in place: u <- Y~ = c * e
// with e = exp((u - max) * it), c = 1/s for the column's first max and neg/s for the others,
// s = sum_k e in double; dpart[k] <- the sum over the block's columns of Y~ * u (double, in a
// fixed order). e goes through ebuf (N * kLanes). A column holding a NaN or an infinity gets
// NaN outputs (as softmax does), whichever unit wins.
template <typename T>
void column_block(T* src, py::ssize_t ld, T* ebuf, py::ssize_t N, T it, T neg, double* dpart) {
  T m[kLanes];
  int32_t w[kLanes];
  double s[kLanes];
  for (py::ssize_t l = 0; l < kLanes; ++l) {
    m[l] = src[l];
    w[l] = 0;
    s[l] = 0.0;
  }
  for (py::ssize_t k = 1; k < N; ++k) {
    const T* u = src + k * ld;
    for (py::ssize_t l = 0; l < kLanes; ++l) {
      if (u[l] > m[l]) {
        m[l] = u[l];
        w[l] = static_cast<int32_t>(k);
      }
    }
  }
  for (py::ssize_t k = 0; k < N; ++k) {
    for (py::ssize_t l = 0; l < kLanes; ++l) {
      const T e = std::exp((src[k * ld + l] - m[l]) * it);
      ebuf[k * kLanes + l] = e;
      s[l] += static_cast<double>(e);
    }
  }
  T cw[kLanes], cl[kLanes];
  for (py::ssize_t l = 0; l < kLanes; ++l) {
    cw[l] = static_cast<T>(1.0 / s[l]);
    cl[l] = neg * cw[l];
  }
  for (py::ssize_t k = 0; k < N; ++k) {
    T* u = src + k * ld;
    double acc = 0.0;
    for (py::ssize_t l = 0; l < kLanes; ++l) {
      const T y = ebuf[k * kLanes + l] * (w[l] == k ? cw[l] : cl[l]);
      acc += static_cast<double>(y) * static_cast<double>(u[l]);
      u[l] = y;
    }
    dpart[k] = acc;
  }
}

// float: kLanes / 16 vectors of 16 lanes per row where the build has AVX-512, else kLanes / 8 of
// 8 lanes (one template, column_block_vec); the exp as in exp_shifted. Both give the same bits
// (checked at six shapes, three temperatures, with and without the sign flip, against an
// -mno-avx512f build of the same code): the sums of e run per lane in double, in the same
// order, and d's products go through the same 8-lane double vectors. The 16-lane version took
// the gate from 0.33-0.43 to 0.27-0.36 ms (B256 784->1024, 2 threads, interleaved, two runs of
// 300 rounds: 1.19x and 1.20x).
using vec::v8d;

// acc[q] += lanes 8q..8q+7 of v as doubles, for the W / 8 octets of a VF of W lanes (W = 8 or 16).
// (Through a pointer: a function returning a 64-byte vector draws an ABI warning from GCC in
// builds without AVX-512.)
template <int W, typename VF>
inline void add_octets(v8d* acc, VF v) {
  if constexpr (W == 8) {
    acc[0] += __builtin_convertvector(v, v8d);
  } else {
    static_assert(W == 16, "add_octets: 8 or 16 lanes");
    acc[0] += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
    acc[1] += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
  }
}

// *t += y * x in double, octet by octet in order (the products exact, one rounding per add).
template <int W, typename VF>
inline void add_octet_products(v8d* t, VF y, VF x) {
  if constexpr (W == 8) {
    *t += __builtin_convertvector(y, v8d) * __builtin_convertvector(x, v8d);
  } else {
    static_assert(W == 16, "add_octet_products: 8 or 16 lanes");
    *t += __builtin_convertvector(__builtin_shufflevector(y, y, 0, 1, 2, 3, 4, 5, 6, 7), v8d) *
          __builtin_convertvector(__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
    *t += __builtin_convertvector(__builtin_shufflevector(y, y, 8, 9, 10, 11, 12, 13, 14, 15), v8d) *
          __builtin_convertvector(__builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
  }
}

// column_block<float> with vectors of W lanes (VF floats, VI ints): kLanes / W per row.
template <typename VF, typename VI, int W>
void column_block_vec(float* src, py::ssize_t ld, float* ebuf, py::ssize_t N, float it, float neg,
                      double* dpart) {
  constexpr int V = kLanes / W, Q = W / 8;  // vectors per row, 8-lane octets per vector
  VF m[V];
  VI wi[V] = {};
  for (int h = 0; h < V; ++h) std::memcpy(&m[h], src + W * h, sizeof(VF));
  for (py::ssize_t k = 1; k < N; ++k) {
    const VI kv = VI{} + static_cast<int>(k);
    for (int h = 0; h < V; ++h) {
      VF x;
      std::memcpy(&x, src + k * ld + W * h, sizeof(x));
      const VI gt = x > m[h];
      m[h] = gt ? x : m[h];
      wi[h] = gt ? kv : wi[h];
    }
  }
  v8d acc[V * Q] = {};
  for (py::ssize_t k = 0; k < N; ++k) {
    for (int h = 0; h < V; ++h) {
      VF x;
      std::memcpy(&x, src + k * ld + W * h, sizeof(x));
      const VF v = vec::exp_nonpositive_n<VF, VI>((x - m[h]) * it);
      std::memcpy(ebuf + k * kLanes + W * h, &v, sizeof(v));
      add_octets<W>(acc + h * Q, v);
    }
  }
  VF cw[V], cl[V];
  for (int h = 0; h < V; ++h) {
    for (int l = 0; l < W; ++l) cw[h][l] = static_cast<float>(1.0 / acc[h * Q + l / 8][l % 8]);
    cl[h] = neg * cw[h];
  }
  for (py::ssize_t k = 0; k < N; ++k) {
    const VI kv = VI{} + static_cast<int>(k);
    v8d t = {};
    for (int h = 0; h < V; ++h) {
      VF x, e;
      std::memcpy(&x, src + k * ld + W * h, sizeof(x));
      std::memcpy(&e, ebuf + k * kLanes + W * h, sizeof(e));
      const VF y = e * (wi[h] == kv ? cw[h] : cl[h]);
      add_octet_products<W>(&t, y, x);
      std::memcpy(src + k * ld + W * h, &y, sizeof(y));
    }
    dpart[k] = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
}

template <>
void column_block<float>(float* src, py::ssize_t ld, float* ebuf, py::ssize_t N, float it,
                         float neg, double* dpart) {
#if defined(__AVX512F__)
  column_block_vec<vec::v16f, vec::v16i, 16>(src, ld, ebuf, N, it, neg, dpart);
#else
  column_block_vec<v8f, v8i, 8>(src, ld, ebuf, N, it, neg, dpart);
#endif
}

template <typename T>
void softwta_gate_columns(py::array& Ut_, py::array& d_, double inv_tau, bool anti_hebbian) {
  auto Ut = as_matrix<T>(Ut_, "Ut", true);
  auto d = as_matrix<T>(d_, "d", true);
  const py::ssize_t N = Ut.rows, B = Ut.cols;
  if (d.rows != 1 || d.cols != N) {
    throw py::value_error("d must be (1, units) for Ut of shape (units, batch)");
  }
  if (N > INT32_MAX) throw py::value_error("Ut: more than 2^31 - 1 units");
  const py::ssize_t n_blocks = (B + kLanes - 1) / kLanes;
  std::vector<double> dpart(static_cast<size_t>(n_blocks * N));
  const T it = static_cast<T>(inv_tau);
  const T neg = anti_hebbian ? T(-1) : T(1);
  py::gil_scoped_release release;
#pragma omp parallel if (B * N >= kParallelMin)
  {
    std::unique_ptr<T[]> ebuf(new T[static_cast<size_t>(N * kLanes)]);
    std::vector<T> pad;  // a partial last block, padded with zero columns
#pragma omp for schedule(static)
    for (py::ssize_t c = 0; c < n_blocks; ++c) {
      const py::ssize_t c0 = c * kLanes, nl = std::min(kLanes, B - c0);
      double* dp = dpart.data() + c * N;
      if (nl == kLanes) {
        column_block<T>(Ut.data + c0, B, ebuf.get(), N, it, neg, dp);
      } else {  // the zero columns add exact zeros (Y~ * 0) to dp
        pad.assign(static_cast<size_t>(N * kLanes), T(0));
        for (py::ssize_t k = 0; k < N; ++k)
          for (py::ssize_t l = 0; l < nl; ++l) pad[k * kLanes + l] = Ut.data[k * B + c0 + l];
        column_block<T>(pad.data(), kLanes, ebuf.get(), N, it, neg, dp);
        for (py::ssize_t k = 0; k < N; ++k)
          for (py::ssize_t l = 0; l < nl; ++l) Ut.data[k * B + c0 + l] = pad[k * kLanes + l];
      }
    }
    // d_k: the block partials summed in block order (deterministic).
#pragma omp for schedule(static)
    for (py::ssize_t k = 0; k < N; ++k) {
      double acc = 0.0;
      for (py::ssize_t c = 0; c < n_blocks; ++c) acc += dpart[static_cast<size_t>(c * N + k)];
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
    // Each thread owns one contiguous block of rows for both passes.
    py::ssize_t nth = 1, tid = 0;
#ifdef _OPENMP
    nth = omp_get_num_threads();
    tid = omp_get_thread_num();
#endif
    const py::ssize_t lo = N * tid / nth, hi = N * (tid + 1) / nth;
    // Pass 1: per row, the rate (from the old weights) and max_j |H_kj - d_k W_kj|.
    for (py::ssize_t k = lo; k < hi; ++k) {
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
#pragma omp barrier
    // Every thread folds the row maxima itself: no second fork/join.
    T gmax = T(0);
    for (py::ssize_t k = 0; k < N; ++k) gmax = std::max(gmax, row_max[k]);
    const double inv_max = 1.0 / (static_cast<double>(gmax) + 1e-30);
    // Pass 2, backwards over the same block: the rows pass 1 read last are still in cache.
    for (py::ssize_t k = hi - 1; k >= lo; --k) {
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
      "softwta_gate_columns",
      [](py::array Ut, py::array d, double inv_tau, bool anti_hebbian) {
        if (is_float64(Ut)) softwta_gate_columns<double>(Ut, d, inv_tau, anti_hebbian);
        else softwta_gate_columns<float>(Ut, d, inv_tau, anti_hebbian);
      },
      py::arg("Ut"), py::arg("d"), py::arg("inv_tau"), py::arg("anti_hebbian"),
      "softwta_gate on U^T: in place, Ut (units, batch) <- Y~^T, the softmax taken down each "
      "column; d (1, units) <- sum_b Y~ * U.");
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
