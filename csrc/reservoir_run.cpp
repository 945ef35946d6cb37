// Leaky echo-state reservoir, C++ part (see bpalts/ops/reservoir_run.py for the math and the
// Python side).
//
//   x_t = x_{t-1} + a * (tanh(U_t + x_{t-1} W^T) - x_{t-1}),   U_t = u_t W_in^T + b
//
// The input projection U (all steps, one GEMM) comes from Python (MKL). This file runs the
// whole time loop in one OpenMP region, one barrier per step:
//
//   reservoir_run_dense: W (N x N) row-major, so unit i's pre-activation is the dot product of
//     the contiguous row W_i with x_{t-1}. Units go in groups of kGroup rows (8 with AVX-512,
//     else 4): the group's rows stream from memory/L3 once per step (sequential streams, which
//     the prefetchers follow), each loaded x vector is reused for all of them, and every row
//     keeps one accumulator vector per sample (independent FMA chains). For B > 1 the group's
//     rows are reused for every sample from L1/L2, two samples per read. An OpenMP
//     work item is kSuper = 64 units: their pre-activations go to a small buffer, then one
//     vectorised tanh + leak pass writes the state (ping-pong buffer)
//     and, on kept steps, the output. Each thread owns a fixed range of work items and walks it
//     forward on even steps and backward on odd ones ("snake" order): the rows it streamed last
//     are still in its L2 / the L3 and are the first it reads at the next step (on a busy
//     machine this beat the plain streaming floor, W.sum(), by 1.6x).
//   reservoir_run_csr: CSR W (int64 crow; uint16 col when N <= 65536, else int32: fewer bytes
//     streamed per step), rows in parallel, the same fused epilogue. B = 1: per row, a gathered
//     dot product (AVX2 gathers where the build has AVX2, else 4 scalar chains), work items in
//     snake order as above. B > 1: the state is kept transposed (units x batch), so every
//     nonzero is one contiguous, vectorised axpy over the batch.
//   reservoir_run_dense_two_step: B = 1, W larger than the L2s: each entry of W read once per
//     two steps (see run_dense_two_step below).
//   reservoir_epilogue: x_next = x + a (tanh(pre) - x), for the large-batch path where the step
//     GEMM runs in MKL from Python.
//
// tanh: a vectorised Cephes tanhf for float (about 1e-7 relative), std::tanh for double.
//
// Every thread owns the same rows at every step (its slice of W stays in its caches when it
// fits). The sums do not depend on the thread count.
// float and double (GCC vector extensions; -march=native gives AVX2/FMA; the row products use
// 64-byte vectors where the build has AVX-512 and W streams from the L3, else 32-byte ones).
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace bpalts {

namespace {

// Units per OpenMP work item (a multiple of kGroup): their tanh runs as one vector pass.
constexpr py::ssize_t kSuper = 64;
// Below this many multiply-adds per step the loop runs on one thread (a barrier costs more).
constexpr py::ssize_t kParallelMin = 1 << 15;

// ---- Row products of both dense paths: groups of kGroup rows (8 with AVX-512, else 4), one
// load of each W entry per group and column block, lanes summed as a tree. Until the sixteenth
// session both paths used groups of 4 rows of 8 floats with sequential lane sums.
// - The two-step path (W from the L3) uses vectors of kWideBytes (64 with AVX-512). At N2000 B1
//   T784, 2 threads, interleaved in one process, the new products made the whole call 4-10%
//   faster (two runs of 20 rounds); 32-byte vectors in the same groups were 0.8% slower. The
//   wider groups alone gained nothing there: a sequential sum of 16 lanes, once per row, product
//   and column segment (about 5 per row and step), ate what they saved.
// - The one-pass loop uses 32-byte vectors (kLoopBytes, below).
// Without AVX-512 (16 vector registers: 8 rows of pairs would spill) the group is 4 rows.
#if defined(__AVX512F__)
constexpr int kWideBytes = 64;
constexpr py::ssize_t kGroup = 8;
#else
constexpr int kWideBytes = 32;
constexpr py::ssize_t kGroup = 4;
#endif

template <typename T, int Bytes>
struct Wide {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int L = Bytes / static_cast<int>(sizeof(T));
};

template <typename V, typename T>
inline V loadw(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The lanes summed as a tree: halves added until 4 lanes are left, then (l0 + l2) + (l1 + l3).
template <typename T, typename V, int L>
inline T hsum_wide(V v) {
  if constexpr (L == 16) {
    typedef T H __attribute__((vector_size(L / 2 * sizeof(T))));
    const H h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    return hsum_wide<T, H, 8>(h);
  } else if constexpr (L == 8) {
    typedef T H __attribute__((vector_size(L / 2 * sizeof(T))));
    const H h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return hsum_wide<T, H, 4>(h);
  } else {
    static_assert(L == 4, "hsum_wide: 4, 8 or 16 lanes");
    return (v[0] + v[2]) + (v[1] + v[3]);
  }
}

// o[r] = W[r, :n] . x for the G rows w + r * ldw: Acc accumulator vectors of Bytes per row
// (columns alternating between them), added, then the lanes as a tree, then the scalar tail. A
// row's sum does not depend on G (a partial group goes row by row through G = 1 with the same
// order).
template <typename T, int G, int Bytes, int Acc>
inline void dot_group(const T* w, py::ssize_t ldw, const T* x, py::ssize_t n, T* o) {
  using V = typename Wide<T, Bytes>::type;
  constexpr int L = Wide<T, Bytes>::L;
  const T* wr[G];  // the row pointers, hoisted (else GCC can run out of registers for them)
  V a[Acc][G];
  for (int r = 0; r < G; ++r) {
    wr[r] = w + r * ldw;
    for (int q = 0; q < Acc; ++q) a[q][r] = V{};
  }
  py::ssize_t j = 0;
  for (; j + Acc * L <= n; j += Acc * L) {
#pragma GCC unroll 2
    for (int q = 0; q < Acc; ++q) {
      const V vx = loadw<V>(x + j + q * L);
#pragma GCC unroll 8
      for (int r = 0; r < G; ++r) a[q][r] += loadw<V>(wr[r] + j + q * L) * vx;
    }
  }
  if (Acc > 1 && j + L <= n) {
    const V vx = loadw<V>(x + j);
#pragma GCC unroll 8
    for (int r = 0; r < G; ++r) a[0][r] += loadw<V>(wr[r] + j) * vx;
    j += L;
  }
  for (int r = 0; r < G; ++r) {
    V v = a[0][r];
    for (int q = 1; q < Acc; ++q) v += a[q][r];
    T s = hsum_wide<T, V, L>(v);
    for (py::ssize_t k = j; k < n; ++k) s += w[r * ldw + k] * x[k];
    o[r] = s;
  }
}

// oa[r] = W[r, :n] . xa and ob[r] = W[r, :n] . xb from one load of each entry, likewise.
template <typename T, int G, int Bytes>
inline void dot2_group(const T* w, py::ssize_t ldw, const T* xa, const T* xb, py::ssize_t n, T* oa,
                       T* ob) {
  using V = typename Wide<T, Bytes>::type;
  constexpr int L = Wide<T, Bytes>::L;
  const T* wr[G];
  V a[G], b[G];
  for (int r = 0; r < G; ++r) {
    wr[r] = w + r * ldw;
    a[r] = b[r] = V{};
  }
  py::ssize_t j = 0;
  for (; j + L <= n; j += L) {
    const V va = loadw<V>(xa + j), vb = loadw<V>(xb + j);
#pragma GCC unroll 8
    for (int r = 0; r < G; ++r) {
      const V v = loadw<V>(wr[r] + j);
      a[r] += v * va;
      b[r] += v * vb;
    }
  }
  for (int r = 0; r < G; ++r) {
    T sa = hsum_wide<T, V, L>(a[r]), sb = hsum_wide<T, V, L>(b[r]);
    for (py::ssize_t k = j; k < n; ++k) {
      sa += w[r * ldw + k] * xa[k];
      sb += w[r * ldw + k] * xb[k];
    }
    oa[r] = sa;
    ob[r] = sb;
  }
}

// dot_group / dot2_group for `rows` <= kGroup rows, vectors of Bytes.
// kAcc = 2 with 4-row groups (no AVX-512): one accumulator per row would leave 4 FMA chains, half
// what the FMA units overlap (a matrix in L2 would then run at half speed). 8-row groups have 8.
constexpr int kAcc = kGroup == 8 ? 1 : 2;

template <typename T, int Bytes>
inline void dot_rows(const T* w, py::ssize_t ldw, const T* x, py::ssize_t n, py::ssize_t rows, T* o) {
  if (rows == kGroup) {
    dot_group<T, kGroup, Bytes, kAcc>(w, ldw, x, n, o);
  } else {
    for (py::ssize_t r = 0; r < rows; ++r) dot_group<T, 1, Bytes, kAcc>(w + r * ldw, ldw, x, n, o + r);
  }
}

template <typename T, int Bytes>
inline void dot2_rows(const T* w, py::ssize_t ldw, const T* xa, const T* xb, py::ssize_t n,
                      py::ssize_t rows, T* oa, T* ob) {
  if (rows == kGroup) {
    dot2_group<T, kGroup, Bytes>(w, ldw, xa, xb, n, oa, ob);
  } else {
    for (py::ssize_t r = 0; r < rows; ++r) dot2_group<T, 1, Bytes>(w + r * ldw, ldw, xa, xb, n, oa + r, ob + r);
  }
}

// The one-pass loop's products: kGroup rows of 32-byte vectors while W fits the L2s, the
// two-step path's kWideBytes once it streams from the L3 (kLoopWideMinBytes). Measured (2
// threads, interleaved, against the 4-row, 8-float products before them): 64-byte vectors ran
// B1 N600-1000 5-14% slower, 32-byte ones 4-12% faster; at N1000 B2 32-byte pairs 1.12-1.20x,
// 64-byte 1.04-1.07x; at N2000 B8-16 against MKL's step, 32-byte pairs lost (0.79-0.97x) where
// 64-byte ones won up to B10-12. With both widths as now, old / new: B1 N600 1.05, N1000 1.01,
// N1000 B2 1.12, N2000 B3 1.01, B7 1.20 (16 rounds). A 32-byte group of 8 rows takes 16 of
// AVX-512's 32 vector registers for the pairs.
// The loop calls them through two out-of-line wrappers with AVX-512: inlined into run_dense's
// loop, GCC (12) spilled the 8 row offsets and reloaded one per FMA (B1 N600-1000 then ran 7-9%
// slower than the old products). With AVX2 (an -mno-avx512f build on the same machine) inlining
// was the better of the two (0.97-1.02x the old products, against 0.92-0.98x).
constexpr int kLoopBytes = 32;
// (The Python side's CPP_TWO_STEP_MIN_BYTES has the same value.)
constexpr py::ssize_t kLoopWideMinBytes = 6 << 20;
#if defined(__AVX512F__)
#define BPALTS_LOOP_PRODUCT __attribute__((noinline))
#else
#define BPALTS_LOOP_PRODUCT inline
#endif

template <typename T, int Bytes>
BPALTS_LOOP_PRODUCT void dot_rows_loop(const T* w, py::ssize_t ldw, const T* x, py::ssize_t n, py::ssize_t rows, T* o) {
  dot_rows<T, Bytes>(w, ldw, x, n, rows, o);
}

template <typename T, int Bytes>
BPALTS_LOOP_PRODUCT void dot2_rows_loop(const T* w, py::ssize_t ldw, const T* xa, const T* xb, py::ssize_t n,
                                        py::ssize_t rows, T* oa, T* ob) {
  dot2_rows<T, Bytes>(w, ldw, xa, xb, n, rows, oa, ob);
}

// ---- tanh, vectorised for float (std::tanh is a scalar call: at B = 256 it would cost more
// than the GEMM's memory traffic): Cephes' tanhf from vec_math.h, about 2 ulp. double: std::tanh.

// p[i] <- tanh(p[i]) for i < n.
inline void tanh_inplace(float* p, py::ssize_t n) { vec::tanh_span(p, p, nullptr, n); }

inline void tanh_inplace(double* p, py::ssize_t n) {
  for (py::ssize_t i = 0; i < n; ++i) p[i] = std::tanh(p[i]);
}

// y[i] = x[i] + a[i] (tanh(pre[i]) - x[i]) for i < n; pre is overwritten (a: stride a_step,
// 0 for one leak for all). For a >= 0.5 as h - (1 - a) (h - x) (torch.lerp's form, the
// reference's): exact at a = 1 (x + (h - x) gave 0 for |x| >= 1e8, not h), no cancellation near 1.
template <typename T>
inline void leaky_n(const T* x, T* pre, const T* a, py::ssize_t a_step, T* y, py::ssize_t n) {
  tanh_inplace(pre, n);
#pragma omp simd
  for (py::ssize_t i = 0; i < n; ++i) {
    const T ai = a[i * a_step], d = pre[i] - x[i];
    y[i] = ai < T(0.5) ? x[i] + ai * d : pre[i] - (T(1) - ai) * d;
  }
}

struct Plan {
  py::ssize_t T_run;   // steps to run (last kept step + 1)
  const int64_t* slot; // slot[t] = output index of step t, or -1
};

template <typename T>
Plan check_common(py::array& U_, py::ssize_t u_stride_rows, py::array& x0_, py::array& leak_,
                  py::array& slots_, py::array& out_, py::ssize_t N, Matrix<T>& U, Matrix<T>& x0,
                  Matrix<T>& leak, Matrix<T>& out) {
  U = as_matrix<T>(U_, "U", false);
  x0 = as_matrix<T>(x0_, "x0", false);
  leak = as_matrix<T>(leak_, "leak", false);
  out = as_matrix<T>(out_, "out", true);
  const py::ssize_t B = x0.rows;
  if (x0.cols != N) throw py::value_error("x0 must be (batch, units) with units = W's rows");
  if (U.cols != N || U.rows < B || U.rows % B != 0) {
    throw py::value_error("U must be (steps * batch, units)");
  }
  if (leak.rows != 1 || leak.cols != N) throw py::value_error("leak must be (1, units)");
  if (out.cols != N || out.rows % B != 0) throw py::value_error("out must be (kept * batch, units)");
  if (!py::isinstance<py::array_t<int64_t>>(slots_) || slots_.ndim() != 1 ||
      !(slots_.flags() & py::array::c_style)) {
    throw py::type_error("slots must be a contiguous 1-D int64 array");
  }
  const py::ssize_t T_run = slots_.shape(0);
  const int64_t* slot = static_cast<const int64_t*>(slots_.data());
  const py::ssize_t kept = out.rows / B;
  for (py::ssize_t t = 0; t < T_run; ++t) {
    if (slot[t] < -1 || slot[t] >= kept) throw py::value_error("slots holds an index outside out");
  }
  if (u_stride_rows != 0 && u_stride_rows != B) throw py::value_error("u_stride_rows must be 0 or batch");
  if (u_stride_rows != 0 && U.rows < T_run * B) throw py::value_error("U has fewer steps than slots");
  return Plan{T_run, slot};
}

template <typename T>
void run_dense(py::array& W_, py::array& U_, py::ssize_t u_stride_rows, py::array& x0_,
               py::array& leak_, py::array& slots_, py::array& out_) {
  auto W = as_matrix<T>(W_, "W", false);
  const py::ssize_t N = W.rows;
  if (W.cols != N) throw py::value_error("W must be square (units x units)");
  Matrix<T> U{}, x0{}, leak{}, out{};
  const Plan plan = check_common<T>(U_, u_stride_rows, x0_, leak_, slots_, out_, N, U, x0, leak, out);
  const py::ssize_t B = x0.rows;
  std::vector<T> buf(static_cast<size_t>(2 * B * N));
  const py::ssize_t n_sup = (N + kSuper - 1) / kSuper;
  // W streamed from the L3 (it outgrows the L2s): the two-step path's vector width
  const bool wide = N * N * static_cast<py::ssize_t>(sizeof(T)) >= kLoopWideMinBytes;
  const T* Wd = W.data;
  const T* a = leak.data;
  py::gil_scoped_release release;
#pragma omp parallel if (B * N * N >= kParallelMin)
  {
    std::vector<T> pre(static_cast<size_t>(B * kSuper));
#ifdef _OPENMP
    const py::ssize_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
#else
    const py::ssize_t nth = 1, tid = 0;
#endif
    const py::ssize_t lo = n_sup * tid / nth, hi = n_sup * (tid + 1) / nth;
    for (py::ssize_t t = 0; t < plan.T_run; ++t) {
      const T* xp = t == 0 ? x0.data : buf.data() + ((t - 1) & 1) * B * N;
      T* xn = buf.data() + (t & 1) * B * N;
      const T* Ut = U.data + t * u_stride_rows * N;
      T* o = plan.slot[t] >= 0 ? out.data + plan.slot[t] * B * N : nullptr;
      // Each thread owns a fixed contiguous range of work items (like schedule(static)) and
      // walks it forward on even steps, backward on odd ones: the rows it streamed last (still
      // in L2, or L3) are the first it needs at the next step.
      for (py::ssize_t it = lo; it < hi; ++it) {
        const py::ssize_t sb = (t & 1) ? lo + hi - 1 - it : it;
        const py::ssize_t s0 = sb * kSuper;
        const py::ssize_t ns = std::min(kSuper, N - s0);
        // pre[b][r] = U_t[b, s0 + r] + W[s0 + r, :] . x_{t-1}[b, :]
        for (py::ssize_t r0 = 0; r0 < ns; r0 += kGroup) {
          const py::ssize_t i0 = s0 + r0;
          const py::ssize_t rows = std::min(kGroup, ns - r0);
          py::ssize_t b = 0;
          // two samples per read of the group's rows
          for (; b + 2 <= B; b += 2) {
            const T* xa = xp + b * N;
            T sa[kGroup], sb[kGroup];
            if (wide) {
              dot2_rows_loop<T, kWideBytes>(Wd + i0 * N, N, xa, xa + N, N, rows, sa, sb);
            } else {
              dot2_rows_loop<T, kLoopBytes>(Wd + i0 * N, N, xa, xa + N, N, rows, sa, sb);
            }
            for (py::ssize_t r = 0; r < rows; ++r) {
              pre[b * kSuper + r0 + r] = Ut[b * N + i0 + r] + sa[r];
              pre[(b + 1) * kSuper + r0 + r] = Ut[(b + 1) * N + i0 + r] + sb[r];
            }
          }
          for (; b < B; ++b) {
            T sum[kGroup];
            if (wide) {
              dot_rows_loop<T, kWideBytes>(Wd + i0 * N, N, xp + b * N, N, rows, sum);
            } else {
              dot_rows_loop<T, kLoopBytes>(Wd + i0 * N, N, xp + b * N, N, rows, sum);
            }
            for (py::ssize_t r = 0; r < rows; ++r) pre[b * kSuper + r0 + r] = Ut[b * N + i0 + r] + sum[r];
          }
        }
        for (py::ssize_t b = 0; b < B; ++b) {
          const py::ssize_t k = b * N + s0;
          leaky_n<T>(xp + k, pre.data() + b * kSuper, a + s0, 1, xn + k, ns);
          if (o) std::memcpy(o + k, xn + k, static_cast<size_t>(ns) * sizeof(T));
        }
      }
#pragma omp barrier
    }
  }
}

// ---- Batch 1, dense: every W entry read once per two steps ("two-step" path).
//
// At batch 1 a step is a matrix-vector product: each step streams all of W (16 MB at N = 2000,
// more than the L2s) for one multiply-add per entry, so the loop is bound by the L3 / memory
// bandwidth. The entry W[i, j] is needed by step t (times x_{t-1}[j]) and by step t + 1 (times
// x_t[j]); both uses can share one load as soon as x_t[j] is final. Rows go in chunks of
// `chunk` rows, each chunk's rows split among the threads; a thread counts each chunk it
// finishes (done[c], release) and waits (acquire) for the earlier chunks of the pass only before
// the products that read their x_t: first the diagonal block, then the columns up to two chunks
// back, then the previous chunk's. One barrier per step. With passes alternating direction:
//
//   forward pass, step t (chunks in ascending order), row i in chunk c = [r0, r1):
//     pre_t[i]    = U_t[i] + P[i] + W[i, :r0] . x_{t-1}[:r0] + W[i, r0:r1] . x_{t-1}[r0:r1]
//     P[i]       <- W[i, :r0] . x_t[:r0]          (same loads as the first product: step t + 1's
//                                                  part from the chunks before c)
//     P[i]       += W[i, r0:r1] . x_t[r0:r1]      (step t + 1's diagonal block, done while the
//                                                  next chunk is processed: the block is still
//                                                  in this thread's cache)
//   backward pass, step t + 1 (chunks in descending order):
//     pre_{t+1}[i] = U_{t+1}[i] + P[i] + W[i, r1:] . x_t[r1:]
//     P[i]        <- W[i, r1:] . x_{t+1}[r1:]      (step t + 2's part from the chunks after c)
//
// so the two passes together read W once from the L3: the block-lower triangle and the diagonal
// blocks forward, the block-upper triangle backward, plus the diagonal blocks again from the
// forward pass's own cache. (Reading the diagonal blocks in both passes, as before, streamed
// (1/2 + 1/(2 C)) of W per step for C chunks; moving the backward pass's diagonal product into
// the forward pass was 1.5-2.4% faster at N2000 T784.) The first step has no P yet and reads its
// whole rows; the last one starts no P. x_t[i] = x_{t-1}[i] + a_i (tanh(pre_t[i]) -
// x_{t-1}[i]) as in run_dense. Each row is summed by one thread in a fixed order (rows go to
// threads in groups of kGroup; the split changes only between steps), so the result does not
// depend on the thread count, nor on how the rows are split. The split follows the threads'
// speeds: every kBalanceSteps steps each thread's share of a chunk is moved halfway towards its
// share of the rows processed per busy second (time waiting on counters or at the barrier
// excluded). On a 2-vCPU VM where one vCPU ran ~15% slower, the faster thread had waited
// 25-30 ms of a 200 ms run (N2000 T784); with the adaptive split the path ran 0-6% faster (four
// interleaved runs of 16 rounds in one process).

// Spin until *flag >= target (acquire): the stores made before the matching release increments
// are visible after it. Yields now and then, in case the thread waited for is not running.
inline void wait_at_least(const std::atomic<int64_t>& flag, int64_t target) {
  for (int64_t spins = 0; flag.load(std::memory_order_acquire) < target; ++spins) {
    if ((spins & 1023) == 1023) std::this_thread::yield();
  }
}

// The same, adding the time spent waiting (if any) to *waited_ns.
inline void wait_at_least(const std::atomic<int64_t>& flag, int64_t target, int64_t* waited_ns) {
  if (flag.load(std::memory_order_acquire) >= target) return;
  const auto t0 = std::chrono::steady_clock::now();
  wait_at_least(flag, target);
  *waited_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
}

// The two-step path's speed-balanced split: thread i sums the rows [cum[i], cum[i + 1]) out of
// `total` of every chunk. Each share moves halfway towards the thread's share of the speeds
// (rows per busy nanosecond in the last window) to damp the noise, keeps at least 1/8 of an
// even share, and the shares are rescaled to sum to `total`.
inline void rebalance_split(std::vector<int64_t>& cum, const std::vector<int64_t>& busy_ns, int64_t total) {
  const size_t nth = busy_ns.size();
  std::vector<double> speed(nth), w(nth);
  double total_speed = 0.0, total_w = 0.0;
  for (size_t i = 0; i < nth; ++i) {
    speed[i] = static_cast<double>(cum[i + 1] - cum[i]) / static_cast<double>(std::max<int64_t>(busy_ns[i], 1));
    total_speed += speed[i];
  }
  for (size_t i = 0; i < nth; ++i) {
    const double old_w = static_cast<double>(cum[i + 1] - cum[i]);
    const double new_w = static_cast<double>(total) * speed[i] / total_speed;
    w[i] = std::max(0.5 * (old_w + new_w), static_cast<double>(total) / (8.0 * static_cast<double>(nth)));
    total_w += w[i];
  }
  double acc = 0.0;
  for (size_t i = 0; i < nth; ++i) {
    cum[i] = static_cast<int64_t>(acc * static_cast<double>(total) / total_w);
    acc += w[i];
  }
  cum[nth] = total;
}

template <typename T>
void run_dense_two_step(py::array& W_, py::array& U_, py::ssize_t u_stride_rows, py::array& x0_,
                        py::array& leak_, py::array& slots_, py::array& out_, py::ssize_t chunk) {
  auto W = as_matrix<T>(W_, "W", false);
  const py::ssize_t N = W.rows;
  if (W.cols != N) throw py::value_error("W must be square (units x units)");
  Matrix<T> U{}, x0{}, leak{}, out{};
  const Plan plan = check_common<T>(U_, u_stride_rows, x0_, leak_, slots_, out_, N, U, x0, leak, out);
  if (x0.rows != 1) throw py::value_error("the two-step dense path runs batch 1 only (x0 must be (1, units))");
  if (chunk < 4 || chunk % 4 != 0) throw py::value_error("chunk must be a positive multiple of 4");
  const py::ssize_t n_chunks = (N + chunk - 1) / chunk;
  std::vector<T> buf(static_cast<size_t>(2 * N)), part(static_cast<size_t>(N));
  // done[c]: how many (thread, step) pairs have finished their rows of chunk c. Within a step
  // the threads wait for these (not a barrier per chunk): a chunk's products that need x_t of
  // the previous chunk of the pass come last, after everything else of the chunk.
  std::unique_ptr<std::atomic<int64_t>[]> done(new std::atomic<int64_t>[static_cast<size_t>(n_chunks)]);
  for (py::ssize_t c = 0; c < n_chunks; ++c) done[c].store(0, std::memory_order_relaxed);
  const T* Wd = W.data;
  const T* a = leak.data;
  T* P = part.data();
  // Each chunk's groups of kGroup rows are split among the threads in proportion to weights that
  // follow the threads' measured speeds: on a shared VM one vCPU can run 15% slower than the
  // other, and the faster thread would wait for it at every chunk. The split moves only every
  // kBalanceSteps steps, so a thread keeps finding its rows in its caches; which thread sums a
  // row does not change the result.
  constexpr py::ssize_t kBalanceSteps = 16;
  constexpr int64_t kWeightTotal = 1 << 20;
  std::vector<int64_t> cum;      // cumulative weights: thread i has [cum[i], cum[i + 1]) of kWeightTotal
  std::vector<int64_t> busy_ns;  // per thread: time working (not waiting) in the current window
  py::gil_scoped_release release;
#pragma omp parallel if (N * N >= kParallelMin)
  {
#ifdef _OPENMP
    const py::ssize_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
#else
    const py::ssize_t nth = 1, tid = 0;
#endif
#pragma omp single
    {
      cum.resize(static_cast<size_t>(nth + 1));
      for (py::ssize_t i = 0; i <= nth; ++i) cum[i] = kWeightTotal * i / nth;
      busy_ns.assign(static_cast<size_t>(nth), 0);
    }  // (implicit barrier)
    int64_t waited_ns = 0;
    auto step_start = std::chrono::steady_clock::now();
    // per row of this thread's share of a chunk: the partial products, then pre-activations
    std::vector<T> acc(static_cast<size_t>(5 * chunk));
    T* s_fix = acc.data();           // x_{t-1} . W over the diagonal block (+ the rest, first step)
    T* s_old = s_fix + chunk;        // x_{t-1} . W over the dual columns
    T* s_new = s_old + chunk;        // x_t . W over the dual columns (step t + 1's partial)
    T* s_old2 = s_new + chunk;       // the same two over the previous chunk's columns
    T* s_new2 = s_old2 + chunk;
    for (py::ssize_t t = 0; t < plan.T_run; ++t) {
      const T* xp = t == 0 ? x0.data : buf.data() + ((t - 1) & 1) * N;
      T* xn = buf.data() + (t & 1) * N;
      py::ssize_t pib = 0, pie = 0;  // this thread's rows of the chunk before, in this pass
      // P[i] += W[i, chunk c's columns] . x_t[chunk c] for this thread's rows [i_b, i_e) of c
      auto diag_next = [&](py::ssize_t c, py::ssize_t i_b, py::ssize_t i_e) {
        const py::ssize_t c0 = c * chunk, c1 = std::min(N, c0 + chunk);
        for (py::ssize_t i0 = i_b; i0 < i_e; i0 += kGroup) {
          const py::ssize_t rows = std::min(kGroup, i_e - i0);
          T q[kGroup];
          dot_rows<T, kWideBytes>(Wd + i0 * N + c0, N, xn + c0, c1 - c0, rows, q);
          for (py::ssize_t r = 0; r < rows; ++r) P[i0 + r] += q[r];
        }
      };
      const T* Ut = U.data + t * u_stride_rows * N;
      T* o = plan.slot[t] >= 0 ? out.data + plan.slot[t] * N : nullptr;
      const bool fwd = (t & 1) == 0, first = t == 0, last = t + 1 == plan.T_run;
      const int64_t target = static_cast<int64_t>((t + 1) * nth);  // chunk finished in step t
      for (py::ssize_t cc = 0; cc < n_chunks; ++cc) {
        const py::ssize_t c = fwd ? cc : n_chunks - 1 - cc;
        const py::ssize_t r0 = c * chunk, r1 = std::min(N, r0 + chunk);
        // Dual columns (x_t final: earlier chunks of this pass), split at the previous chunk:
        // [d0, d1) needs chunks up to two back, [m0, m1) the previous one. e: the other side.
        py::ssize_t d0, d1, m0, m1, e0, e1;
        if (fwd) {
          m1 = r0, m0 = std::max<py::ssize_t>(0, r0 - chunk), d0 = 0, d1 = m0, e0 = r1, e1 = N;
        } else {
          m0 = r1, m1 = std::min(N, r1 + chunk), d0 = m1, d1 = N, e0 = 0, e1 = r0;
        }
        // this thread's rows of the chunk: whole groups of kGroup, in order
        const py::ssize_t ng = (r1 - r0 + kGroup - 1) / kGroup;
        const py::ssize_t ib = std::min(r1, r0 + kGroup * (ng * cum[tid] / kWeightTotal));
        const py::ssize_t ie = std::min(r1, r0 + kGroup * (ng * cum[tid + 1] / kWeightTotal));
        // 1. no wait: the diagonal block (and, at the first step, the other side) with x_{t-1}.
        //    A backward pass has it in P already (the forward pass before it added it).
        if (!fwd) std::fill(s_fix, s_fix + (ie - ib), T(0));
        for (py::ssize_t i0 = ib; fwd && i0 < ie; i0 += kGroup) {
          const py::ssize_t rows = std::min(kGroup, ie - i0);
          T* f = s_fix + (i0 - ib);
          dot_rows<T, kWideBytes>(Wd + i0 * N + r0, N, xp + r0, r1 - r0, rows, f);
          if (first) {
            T rest[kGroup];
            dot_rows<T, kWideBytes>(Wd + i0 * N + e0, N, xp + e0, e1 - e0, rows, rest);
            for (py::ssize_t r = 0; r < rows; ++r) f[r] += rest[r];
          }
        }
        // 2. the dual columns up to two chunks back, then 3. those of the previous chunk
        for (int part_no = 0; part_no < 2; ++part_no) {
          const py::ssize_t lo = part_no == 0 ? d0 : m0, hi = part_no == 0 ? d1 : m1;
          T* so = part_no == 0 ? s_old : s_old2;
          T* sn = part_no == 0 ? s_new : s_new2;
          const py::ssize_t back = part_no == 0 ? 2 : 1;  // chunks back in pass order
          if (!last && cc >= back) {
            wait_at_least(done[fwd ? c - back : c + back], target, &waited_ns);
          }
          for (py::ssize_t i0 = ib; i0 < ie; i0 += kGroup) {
            const py::ssize_t rows = std::min(kGroup, ie - i0);
            const T* w = Wd + i0 * N + lo;
            const py::ssize_t k = i0 - ib;
            if (last) {
              dot_rows<T, kWideBytes>(w, N, xp + lo, hi - lo, rows, so + k);
            } else {
              dot2_rows<T, kWideBytes>(w, N, xp + lo, xn + lo, hi - lo, rows, so + k, sn + k);
            }
          }
        }
        // 4. forward: step t + 1's diagonal product of the previous chunk (x_t final there since
        //    the wait before 3; its block is still in this thread's cache)
        if (fwd && !last && cc >= 1) diag_next(c - 1, pib, pie);
        for (py::ssize_t i = ib; i < ie; ++i) {
          const py::ssize_t k = i - ib;
          s_fix[k] = Ut[i] + (first ? T(0) : P[i]) + (s_old[k] + s_old2[k]) + s_fix[k];
          if (!last) P[i] = s_new[k] + s_new2[k];
        }
        if (ie > ib) {
          leaky_n<T>(xp + ib, s_fix, a + ib, 1, xn + ib, ie - ib);
          if (o) std::memcpy(o + ib, xn + ib, static_cast<size_t>(ie - ib) * sizeof(T));
        }
        done[c].fetch_add(1, std::memory_order_release);
        pib = ib, pie = ie;
      }
      if (fwd && !last) {  // the last chunk's diagonal product for step t + 1
        wait_at_least(done[n_chunks - 1], target, &waited_ns);
        diag_next(n_chunks - 1, pib, pie);
      }
      // The next step reads all of x_t and overwrites x_{t-1}'s buffer.
      if (nth > 1 && (t + 1) % kBalanceSteps == 0) {
        const auto now = std::chrono::steady_clock::now();
        busy_ns[tid] = std::chrono::duration_cast<std::chrono::nanoseconds>(now - step_start).count() - waited_ns;
#pragma omp barrier
#pragma omp single
        {
          rebalance_split(cum, busy_ns, kWeightTotal);
        }  // (implicit barrier: everyone sees the new split)
        waited_ns = 0;
        step_start = std::chrono::steady_clock::now();
      } else {
        const auto t0 = std::chrono::steady_clock::now();
#pragma omp barrier
        waited_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
      }
    }
  }
}

// sum_k val[k] * x[col[k]] over k in [k0, k1): one CSR row times a dense vector. Portable
// version: four partial sums (independent FMA chains for the gathered loads).
template <typename T, typename I>
inline T sparse_dot(const T* val, const I* col, const T* x, int64_t k0, int64_t k1) {
  T q0 = 0, q1 = 0, q2 = 0, q3 = 0;
  int64_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    q0 += val[k] * x[col[k]];
    q1 += val[k + 1] * x[col[k + 1]];
    q2 += val[k + 2] * x[col[k + 2]];
    q3 += val[k + 3] * x[col[k + 3]];
  }
  for (; k < k1; ++k) q0 += val[k] * x[col[k]];
  return (q0 + q1) + (q2 + q3);
}

#ifdef __AVX2__
// float with AVX2 (the default -march=native build on x86): 16 nonzeros per iteration, x read
// with two 8-lane gathers (vgatherdps), two FMA chains. On a 2-core Xeon VM, N = 2000 at 5%
// density, one thread, 784 steps of the row products: 80 ms with the scalar loop, 50 ms with
// this one. The index loads widen uint16 / take int32 as they are.
inline __m256i load_index8(const uint16_t* c) {
  return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
}
inline __m256i load_index8(const int32_t* c) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
}

template <typename I>
inline float sparse_dot_avx2(const float* val, const I* col, const float* x, int64_t k0, int64_t k1) {
  __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
  int64_t k = k0;
  for (; k + 16 <= k1; k += 16) {
    a = _mm256_fmadd_ps(_mm256_loadu_ps(val + k), _mm256_i32gather_ps(x, load_index8(col + k), 4), a);
    b = _mm256_fmadd_ps(_mm256_loadu_ps(val + k + 8),
                        _mm256_i32gather_ps(x, load_index8(col + k + 8), 4), b);
  }
  if (k + 8 <= k1) {
    a = _mm256_fmadd_ps(_mm256_loadu_ps(val + k), _mm256_i32gather_ps(x, load_index8(col + k), 4), a);
    k += 8;
  }
  alignas(32) float s[8];
  _mm256_store_ps(s, _mm256_add_ps(a, b));
  float q = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; k < k1; ++k) q += val[k] * x[col[k]];
  return q;
}

template <>
inline float sparse_dot<float, uint16_t>(const float* val, const uint16_t* col, const float* x,
                                         int64_t k0, int64_t k1) {
  return sparse_dot_avx2(val, col, x, k0, k1);
}
template <>
inline float sparse_dot<float, int32_t>(const float* val, const int32_t* col, const float* x,
                                        int64_t k0, int64_t k1) {
  return sparse_dot_avx2(val, col, x, k0, k1);
}
#endif

template <typename T, typename I>
void run_csr(py::array& crow_, py::array& col_, py::array& val_, py::array& U_,
             py::ssize_t u_stride_rows, py::array& x0_, py::array& leak_, py::array& slots_,
             py::array& out_) {
  if (!py::isinstance<py::array_t<int64_t>>(crow_) || crow_.ndim() != 1 ||
      !(crow_.flags() & py::array::c_style)) {
    throw py::type_error("crow must be a contiguous 1-D int64 array");
  }
  if (!py::isinstance<py::array_t<I>>(col_) || col_.ndim() != 1 ||
      !(col_.flags() & py::array::c_style)) {
    throw py::type_error("col must be a contiguous 1-D int32 or uint16 array");
  }
  if (!py::isinstance<py::array_t<T>>(val_) || val_.ndim() != 1 || !(val_.flags() & py::array::c_style)) {
    throw py::type_error("val must be a contiguous 1-D array of the state dtype");
  }
  const py::ssize_t N = crow_.shape(0) - 1;
  if (N < 1) throw py::value_error("crow must have units + 1 entries");
  const int64_t* crow = static_cast<const int64_t*>(crow_.data());
  const I* col = static_cast<const I*>(col_.data());
  const T* val = static_cast<const T*>(val_.data());
  const py::ssize_t nnz = col_.shape(0);
  if (val_.shape(0) != nnz || crow[0] != 0 || crow[N] != nnz) {
    throw py::value_error("crow / col / val do not describe one CSR matrix");
  }
  for (py::ssize_t i = 0; i < N; ++i) {
    if (crow[i + 1] < crow[i]) throw py::value_error("crow must be non-decreasing");
  }
  for (py::ssize_t k = 0; k < nnz; ++k) {
    if (static_cast<int64_t>(col[k]) < 0 || static_cast<int64_t>(col[k]) >= N) throw py::value_error("col holds an index outside [0, units)");
  }
  Matrix<T> U{}, x0{}, leak{}, out{};
  const Plan plan = check_common<T>(U_, u_stride_rows, x0_, leak_, slots_, out_, N, U, x0, leak, out);
  const py::ssize_t B = x0.rows;
  const T* a = leak.data;
  py::gil_scoped_release release;
  if (B == 1) {
    std::vector<T> buf(static_cast<size_t>(2 * N));
#pragma omp parallel if (nnz + N >= kParallelMin)
    {
      T pre[kSuper];
      const py::ssize_t n_sup = (N + kSuper - 1) / kSuper;
#ifdef _OPENMP
      const py::ssize_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
#else
      const py::ssize_t nth = 1, tid = 0;
#endif
      const py::ssize_t lo = n_sup * tid / nth, hi = n_sup * (tid + 1) / nth;
      for (py::ssize_t t = 0; t < plan.T_run; ++t) {
        const T* xp = t == 0 ? x0.data : buf.data() + ((t - 1) & 1) * N;
        T* xn = buf.data() + (t & 1) * N;
        const T* Ut = U.data + t * u_stride_rows * N;
        T* o = plan.slot[t] >= 0 ? out.data + plan.slot[t] * N : nullptr;
        // fixed range per thread, walked forward / backward on alternate steps (as dense)
        for (py::ssize_t it = lo; it < hi; ++it) {
          const py::ssize_t sb = (t & 1) ? lo + hi - 1 - it : it;
          const py::ssize_t s0 = sb * kSuper;
          const py::ssize_t ns = std::min(kSuper, N - s0);
          for (py::ssize_t r = 0; r < ns; ++r) {
            const py::ssize_t i = s0 + r;
            pre[r] = Ut[i] + sparse_dot<T, I>(val, col, xp, crow[i], crow[i + 1]);
          }
          leaky_n<T>(xp + s0, pre, a + s0, 1, xn + s0, ns);
          if (o) std::memcpy(o + s0, xn + s0, static_cast<size_t>(ns) * sizeof(T));
        }
#pragma omp barrier
      }
    }
    return;
  }
  // B > 1: the state is kept transposed (units x batch), so each nonzero W_ik multiplies one
  // contiguous batch vector x[k, :] (a vectorised axpy) instead of B scattered gathers.
  std::vector<T> buf(static_cast<size_t>(3 * N * B));  // [x0^T | ping | pong]
  for (py::ssize_t b = 0; b < B; ++b) {
    for (py::ssize_t i = 0; i < N; ++i) buf[static_cast<size_t>(i * B + b)] = x0.data[b * N + i];
  }
#pragma omp parallel if (B * (nnz + N) >= kParallelMin)
  {
    std::vector<T> acc(static_cast<size_t>(B));
    for (py::ssize_t t = 0; t < plan.T_run; ++t) {
      const T* xp = buf.data() + (t == 0 ? 0 : (1 + ((t - 1) & 1)) * N * B);
      T* xn = buf.data() + (1 + (t & 1)) * N * B;
      const T* Ut = U.data + t * u_stride_rows * N;
      T* o = plan.slot[t] >= 0 ? out.data + plan.slot[t] * B * N : nullptr;
#pragma omp for schedule(static)
      for (py::ssize_t i = 0; i < N; ++i) {
        T* ac = acc.data();
        std::fill(ac, ac + B, T(0));
        for (int64_t k = crow[i]; k < crow[i + 1]; ++k) {
          const T v = val[k];
          const T* xr = xp + static_cast<py::ssize_t>(col[k]) * B;
#pragma omp simd
          for (py::ssize_t b = 0; b < B; ++b) ac[b] += v * xr[b];
        }
        for (py::ssize_t b = 0; b < B; ++b) ac[b] += Ut[b * N + i];
        T* yi = xn + i * B;
        leaky_n<T>(xp + i * B, ac, a + i, 0, yi, B);
        if (o) {
          for (py::ssize_t b = 0; b < B; ++b) o[b * N + i] = yi[b];
        }
      }
    }
  }
}

template <typename T>
void epilogue(py::array& pre_, py::array& xp_, py::array& leak_, py::array& xn_) {
  auto pre = as_matrix<T>(pre_, "pre", false);
  auto xp = as_matrix<T>(xp_, "x", false);
  auto leak = as_matrix<T>(leak_, "leak", false);
  auto xn = as_matrix<T>(xn_, "x_next", true);
  const py::ssize_t B = pre.rows, N = pre.cols;
  if (xp.rows != B || xp.cols != N || xn.rows != B || xn.cols != N) {
    throw py::value_error("pre, x and x_next must share one shape (batch, units)");
  }
  if (leak.rows != 1 || leak.cols != N) throw py::value_error("leak must be (1, units)");
  const T* a = leak.data;
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (B * N >= kParallelMin)
  for (py::ssize_t b = 0; b < B; ++b) {
    const T* p = pre.data + b * N;
    const T* x = xp.data + b * N;
    T* y = xn.data + b * N;
    std::memcpy(y, p, static_cast<size_t>(N) * sizeof(T));
    leaky_n<T>(x, y, a, 1, y, N);  // y holds pre, then the new state
  }
}

}  // namespace

void bind_reservoir_run(py::module_& m) {
  m.def(
      "reservoir_run_dense",
      [](py::array W, py::array U, py::ssize_t u_stride_rows, py::array x0, py::array leak,
         py::array slots, py::array out) {
        if (is_float64(W)) {
          run_dense<double>(W, U, u_stride_rows, x0, leak, slots, out);
        } else {
          run_dense<float>(W, U, u_stride_rows, x0, leak, slots, out);
        }
      },
      py::arg("W"), py::arg("U"), py::arg("u_stride_rows"), py::arg("x0"), py::arg("leak"),
      py::arg("slots"), py::arg("out"),
      "Leaky reservoir time loop, dense W (N x N). U: (steps*batch, N) input projection + bias "
      "(u_stride_rows = batch), or (batch, N) held for every step (u_stride_rows = 0); x0 "
      "(batch, N); leak (1, N); slots int64 (steps,): output index of each step or -1; out "
      "(kept*batch, N) written at kept steps.");
  m.def(
      "reservoir_run_dense_two_step",
      [](py::array W, py::array U, py::ssize_t u_stride_rows, py::array x0, py::array leak,
         py::array slots, py::array out, py::ssize_t chunk) {
        if (is_float64(W)) {
          run_dense_two_step<double>(W, U, u_stride_rows, x0, leak, slots, out, chunk);
        } else {
          run_dense_two_step<float>(W, U, u_stride_rows, x0, leak, slots, out, chunk);
        }
      },
      py::arg("W"), py::arg("U"), py::arg("u_stride_rows"), py::arg("x0"), py::arg("leak"),
      py::arg("slots"), py::arg("out"), py::arg("chunk"),
      "reservoir_run_dense at batch 1 with each W entry read once per two steps (rows in chunks "
      "of `chunk` rows, a multiple of 4; threads wait on per-chunk counters, one barrier per "
      "step). Arguments as reservoir_run_dense.");
  m.def(
      "reservoir_run_csr",
      [](py::array crow, py::array col, py::array val, py::array U, py::ssize_t u_stride_rows,
         py::array x0, py::array leak, py::array slots, py::array out) {
        const bool narrow = col.dtype().kind() == 'u' && col.itemsize() == 2;
        if (is_float64(val)) {
          if (narrow) run_csr<double, uint16_t>(crow, col, val, U, u_stride_rows, x0, leak, slots, out);
          else run_csr<double, int32_t>(crow, col, val, U, u_stride_rows, x0, leak, slots, out);
        } else {
          if (narrow) run_csr<float, uint16_t>(crow, col, val, U, u_stride_rows, x0, leak, slots, out);
          else run_csr<float, int32_t>(crow, col, val, U, u_stride_rows, x0, leak, slots, out);
        }
      },
      py::arg("crow"), py::arg("col"), py::arg("val"), py::arg("U"), py::arg("u_stride_rows"),
      py::arg("x0"), py::arg("leak"), py::arg("slots"), py::arg("out"),
      "Leaky reservoir time loop, CSR W (crow int64 (N+1,), col int32 or uint16 (nnz,), val "
      "(nnz,)); "
      "other arguments as reservoir_run_dense.");
  m.def(
      "reservoir_epilogue",
      [](py::array pre, py::array x, py::array leak, py::array x_next) {
        if (is_float64(pre)) {
          epilogue<double>(pre, x, leak, x_next);
        } else {
          epilogue<float>(pre, x, leak, x_next);
        }
      },
      py::arg("pre"), py::arg("x"), py::arg("leak"), py::arg("x_next"),
      "x_next = x + leak * (tanh(pre) - x), all (batch, N); leak (1, N).");
}

}  // namespace bpalts
