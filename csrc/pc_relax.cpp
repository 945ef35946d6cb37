// Predictive-coding relaxation, C++ part (math and the Python side: bpalts/ops/pc_relax.py).
//
// Every array is units-major, (units, rows): the Python side keeps the states, predictions,
// errors and feedback transposed, because MKL runs the step's products in that layout
// (mu_l^T = W_l f(x_{l-1})^T + b_l and g_l^T = W_{l+1}^T e_{l+1}^T) 8-9% faster than the
// row-major f W^T and e W at 784-1000-500-250-10 B256. The GEMMs run in MKL from Python into
// preallocated buffers. Everything elementwise in a step is fused here, all layers per call:
//
//   pc_errors: one pass per unit row: e_l = x_l - mu_l (in place over the mu buffer, or into a
//     separate buffer when the predictions are fixed) and its 0.5 |e|^2; then, per sample
//     (column) of the output, its special cases (clamped cross-entropy: e_L = t - softmax(mu_L),
//     energy -sum t log softmax(mu_L); nudging: + beta_b * loss(x_L, t)). Returns the
//     batch-mean energy. Partials are in double and summed in a fixed order (unit rows, then
//     samples): independent of the thread count.
//     It also reports which layers have a nonzero error: the Python side skips the GEMMs whose
//     input is exactly zero (after a feed-forward initialisation the error reaches layer l only
//     at step L - l) and the forward GEMMs whose input layer did not move. Exact: a skipped
//     product would have been exactly zero / exactly the stored one.
//   pc_update: one pass per unit row of the hidden layers: x_l += gamma (-e_l + f'(x_l) g_l), and,
//     while the row is in cache, f(x_l) for the next step's GEMMs (layers that cannot move are
//     skipped); nudged output: x_L += gamma (-e_L - beta_b dloss/dx_L). f'(x_l) is formed on the
//     fly from the stored f (tanh: 1 - f^2, the same float operations as activate) or the sign of
//     x (relu, leaky relu), not stored and read back: two fewer passes over a layer's memory; only
//     fixed predictions read a frozen f' from dfs.
//   pc_act: f (and f') of a list of arrays (the initial states; any layout: elementwise).
//   pc_transpose: tiled transposes (the states in and out of the units-major layout).
//
// float tanh is vectorised by hand (GCC vector extensions; std::tanh does not vectorise):
// tanh|x| = (1 - e) / (1 + e), e = exp(-2|x|) (Cephes expf), and Cephes' odd polynomial below
// |x| < 0.625 where that quotient cancels; a few ulp. double uses std::tanh.
// OpenMP over unit rows / samples (static), serial below kParallelMin elements; C-contiguous
// numpy buffers.
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

namespace bpalts {
namespace pc {

enum Act { kTanh = 0, kRelu = 1, kLeaky = 2, kIdentity = 3 };
constexpr double kLeakySlope = 0.01;
constexpr py::ssize_t kParallelMin = 1 << 15;

// f(v) -> f, f'(v) -> df (df may be null); f may alias v.
void activate(const float* v, float* f, float* df, py::ssize_t n, int act) {
  if (act == kTanh) {
    vec::tanh_span(v, f, df, n);
    return;
  }
  const float slope = act == kRelu ? 0.0f : act == kLeaky ? static_cast<float>(kLeakySlope) : 1.0f;
  // Written with max/min: GCC (12) does not vectorise `x > 0 ? x : slope * x`, and the scalar
  // loop paid a mispredicted sign branch per element (about 5x slower than the tanh path at
  // 256 x 1000). max(x, 0) + slope * min(x, 0) is exact (one of the two terms is 0) and keeps NaN;
  // relu uses max(x, 0) alone so that relu(-inf) is 0, not 0 * -inf.
  // df first: f may alias v.
  if (df) {
#pragma omp simd
    for (py::ssize_t k = 0; k < n; ++k) df[k] = v[k] > 0.0f ? 1.0f : slope;
  }
  const bool relu = act == kRelu;
#pragma omp simd
  for (py::ssize_t k = 0; k < n; ++k) {
    const float x = v[k];
    f[k] = relu ? std::max(x, 0.0f) : std::max(x, 0.0f) + slope * std::min(x, 0.0f);
  }
}

void activate(const double* v, double* f, double* df, py::ssize_t n, int act) {
  const double slope = act == kRelu ? 0.0 : act == kLeaky ? kLeakySlope : 1.0;
  for (py::ssize_t k = 0; k < n; ++k) {
    const double x = v[k];
    if (act == kTanh) {
      const double y = std::tanh(x);
      f[k] = y;
      if (df) df[k] = 1.0 - y * y;
    } else {
      const bool pos = x > 0.0;
      f[k] = pos ? x : slope * x;
      if (df) df[k] = pos ? 1.0 : slope;
    }
  }
}

namespace {

template <typename T>
std::vector<Matrix<T>> as_list(py::list lst, const char* name, bool writable) {
  std::vector<Matrix<T>> out;
  out.reserve(lst.size());
  for (size_t i = 0; i < lst.size(); ++i) {
    py::array a = lst[i].cast<py::array>();
    out.push_back(as_matrix<T>(a, name, writable));
  }
  return out;
}

template <typename T>
void check_shape(const Matrix<T>& m, py::ssize_t rows, py::ssize_t cols, const char* name) {
  if (m.rows != rows || m.cols != cols) throw py::value_error(std::string(name) + " has the wrong shape");
}

// log-sum-exp of n values at stride ld (double).
template <typename T>
double lse_strided(const T* u, py::ssize_t n, py::ssize_t ld) {
  double m = static_cast<double>(u[0]);
  for (py::ssize_t k = 1; k < n; ++k) m = std::max(m, static_cast<double>(u[k * ld]));
  double s = 0.0;
  for (py::ssize_t k = 0; k < n; ++k) s += std::exp(static_cast<double>(u[k * ld]) - m);
  return m + std::log(s);
}

// The per-sample nudging strengths, beta_rows (1, rows): a view of the caller's array, which
// outlives the call.
template <typename T>
const T* nudge_strengths(py::object beta_, py::ssize_t B) {
  py::array b = beta_.cast<py::array>();
  auto bm = as_matrix<T>(b, "beta_rows", false);
  check_shape(bm, 1, B, "beta_rows");
  return bm.data;
}

// The unit rows (layer, row) of the layers l with take[l], flattened for one OpenMP loop.
template <typename T>
std::vector<std::pair<size_t, py::ssize_t>> unit_rows(const std::vector<Matrix<T>>& S,
                                                      const std::vector<char>& take) {
  std::vector<std::pair<size_t, py::ssize_t>> rows;
  for (size_t l = 0; l < take.size(); ++l)
    if (take[l])
      for (py::ssize_t k = 0; k < S[l].rows; ++k) rows.emplace_back(l, k);
  return rows;
}

template <typename T>
py::ssize_t total_elements(const std::vector<Matrix<T>>& S) {
  py::ssize_t total = 0;
  for (auto& s : S) total += s.rows * s.cols;
  return total;
}

template <typename T>
py::tuple pc_errors(py::list states_, py::list mus_, py::list errs_, py::array target_, py::object beta_,
                    bool nudge, bool ce) {
  auto S = as_list<T>(states_, "states", false);
  auto M = as_list<T>(mus_, "mus", false);
  auto E = as_list<T>(errs_, "errs", true);
  auto t = as_matrix<T>(target_, "target", false);
  const size_t L = S.size();
  if (M.size() != L || E.size() != L || L == 0) throw py::value_error("states, mus, errs: same length");
  const py::ssize_t B = S[0].cols;
  for (size_t l = 0; l < L; ++l) {
    check_shape(S[l], S[l].rows, B, "states[l]");
    check_shape(M[l], S[l].rows, B, "mus[l]");
    check_shape(E[l], S[l].rows, B, "errs[l]");
  }
  const py::ssize_t nL = S[L - 1].rows;
  check_shape(t, nL, B, "target");
  const T* beta = nudge ? nudge_strengths<T>(beta_, B) : nullptr;
  const bool ce_clamped = !nudge && ce;
  // The output layer as plain rows too, unless its errors are the clamped cross-entropy's.
  std::vector<char> plain(L, 1);
  plain[L - 1] = !ce_clamped;
  const auto rows = unit_rows(S, plain);
  const py::ssize_t n_rows = static_cast<py::ssize_t>(rows.size());
  std::vector<double> rowE(rows.size(), 0.0);  // 0.5 |e|^2 per unit row
  std::vector<unsigned char> rowNZ(rows.size(), 0);
  std::vector<double> colE(static_cast<size_t>(B), 0.0);  // the output's per-sample terms
  std::vector<unsigned char> colNZ(static_cast<size_t>(B), 0);
  {
    py::gil_scoped_release release;
#pragma omp parallel if (total_elements(S) >= kParallelMin)
    {
#pragma omp for schedule(static)
      for (py::ssize_t r = 0; r < n_rows; ++r) {
        const size_t l = rows[static_cast<size_t>(r)].first;
        const py::ssize_t k = rows[static_cast<size_t>(r)].second;
        const T* s = S[l].data + k * B;
        const T* mu = M[l].data + k * B;
        T* e = E[l].data + k * B;
        T sq = T(0);
        int any = 0;
#pragma omp simd reduction(+ : sq) reduction(| : any)
        for (py::ssize_t b = 0; b < B; ++b) {
          const T v = s[b] - mu[b];
          e[b] = v;
          sq += v * v;
          any |= (v != T(0));
        }
        rowE[static_cast<size_t>(r)] = 0.5 * static_cast<double>(sq);
        rowNZ[static_cast<size_t>(r)] = any != 0;
      }
      if (ce_clamped || nudge) {  // per sample (column) of the output layer
        const T* s = S[L - 1].data;
        const T* mu = M[L - 1].data;
        T* e = E[L - 1].data;
#pragma omp for schedule(static)
        for (py::ssize_t b = 0; b < B; ++b) {
          double acc = 0.0;
          if (ce_clamped) {
            const double lse = lse_strided(mu + b, nL, B);
            bool any = false;
            for (py::ssize_t k = 0; k < nL; ++k) {
              const double lp = static_cast<double>(mu[k * B + b]) - lse;
              e[k * B + b] = static_cast<T>(static_cast<double>(t.data[k * B + b]) - std::exp(lp));
              any |= e[k * B + b] != T(0);
              acc -= static_cast<double>(t.data[k * B + b]) * lp;
            }
            colNZ[static_cast<size_t>(b)] = any;
          } else {  // nudging: + beta_b * loss(x_L, target) (the errors are plain rows above)
            double loss = 0.0;
            if (ce) {
              const double lse = lse_strided(s + b, nL, B);
              for (py::ssize_t k = 0; k < nL; ++k)
                loss -= static_cast<double>(t.data[k * B + b]) * (static_cast<double>(s[k * B + b]) - lse);
            } else {
              for (py::ssize_t k = 0; k < nL; ++k) {
                const double d = static_cast<double>(s[k * B + b]) - static_cast<double>(t.data[k * B + b]);
                loss += 0.5 * d * d;
              }
            }
            acc = static_cast<double>(beta[b]) * loss;
          }
          colE[static_cast<size_t>(b)] = acc;
        }
      }
    }
  }
  // Sums in a fixed order (unit rows, then samples): independent of the thread count.
  double sum = 0.0;
  for (double v : rowE) sum += v;
  for (double v : colE) sum += v;
  std::vector<char> nz(L, 0);
  for (size_t r = 0; r < rows.size(); ++r) nz[rows[r].first] |= rowNZ[r];
  if (ce_clamped)
    for (unsigned char v : colNZ) nz[L - 1] |= v;
  py::list out;
  for (size_t l = 0; l < L; ++l) out.append(py::bool_(nz[l] != 0));
  return py::make_tuple(sum / static_cast<double>(B), out);
}

template <typename T>
void pc_update(py::list states_, py::list errs_, py::list gs_, py::list fs_, py::list dfs_,
               py::array target_, py::object beta_, double step, int act, bool nudge, bool ce,
               bool refresh, py::list use_g_, py::list e_nz_) {
  auto S = as_list<T>(states_, "states", true);
  auto E = as_list<T>(errs_, "errs", false);
  auto G = as_list<T>(gs_, "gs", false);
  auto F = as_list<T>(fs_, "fs", true);
  auto D = as_list<T>(dfs_, "dfs", true);
  auto t = as_matrix<T>(target_, "target", false);
  const size_t L = S.size();
  if (E.size() != L || G.size() + 1 != L || F.size() + 1 != L || D.size() + 1 != L)
    throw py::value_error("pc_update: L states/errs and L-1 gs/fs/dfs expected");
  const py::ssize_t B = S[0].cols;
  for (size_t l = 0; l < L; ++l) {
    check_shape(S[l], S[l].rows, B, "states[l]");
    check_shape(E[l], S[l].rows, B, "errs[l]");
  }
  for (size_t l = 0; l + 1 < L; ++l) {
    check_shape(G[l], S[l].rows, B, "gs[l]");
    check_shape(F[l], S[l].rows, B, "fs[l]");
    check_shape(D[l], S[l].rows, B, "dfs[l]");
  }
  const py::ssize_t nL = S[L - 1].rows;
  check_shape(t, nL, B, "target");
  const T* beta = nudge ? nudge_strengths<T>(beta_, B) : nullptr;
  if (use_g_.size() + 1 != L || e_nz_.size() != L)
    throw py::value_error("pc_update: use_g needs L-1 flags and e_nonzero L flags");
  // use_g[l]: g_l was computed (else it is exactly 0: e_{l+1} == 0); e_nz[l]: e_l has a nonzero.
  // A hidden layer with neither does not move (and keeps f, f').
  std::vector<char> use_g(L - 1), e_nz(L);
  for (size_t l = 0; l + 1 < L; ++l) use_g[l] = use_g_[l].cast<bool>();
  for (size_t l = 0; l < L; ++l) e_nz[l] = e_nz_[l].cast<bool>();
  std::vector<char> moves(L - 1);  // the hidden layers that move
  for (size_t l = 0; l + 1 < L; ++l) moves[l] = use_g[l] || e_nz[l];
  const auto rows = unit_rows(S, moves);
  const py::ssize_t n_rows = static_cast<py::ssize_t>(rows.size());
  const T g = static_cast<T>(step);
  py::gil_scoped_release release;
#pragma omp parallel if (total_elements(S) >= kParallelMin)
  {
#pragma omp for schedule(static)
    for (py::ssize_t r = 0; r < n_rows; ++r) {
      const size_t l = rows[static_cast<size_t>(r)].first;
      const py::ssize_t k = rows[static_cast<size_t>(r)].second;
      T* s = S[l].data + k * B;
      const T* e = E[l].data + k * B;
      const T* gg = G[l].data + k * B;
      T* f = F[l].data + k * B;
      if (!use_g[l]) {
#pragma omp simd
        for (py::ssize_t b = 0; b < B; ++b) s[b] -= g * e[b];
      } else if (!refresh) {  // fixed predictions: f' frozen in dfs
        const T* df = D[l].data + k * B;
#pragma omp simd
        for (py::ssize_t b = 0; b < B; ++b) s[b] += g * (df[b] * gg[b] - e[b]);
      } else if (act == kTanh) {  // f' = 1 - f^2 from the stored f = tanh(x) (as activate forms it)
#pragma omp simd
        for (py::ssize_t b = 0; b < B; ++b) s[b] += g * ((T(1) - f[b] * f[b]) * gg[b] - e[b]);
      } else if (act == kIdentity) {
#pragma omp simd
        for (py::ssize_t b = 0; b < B; ++b) s[b] += g * (gg[b] - e[b]);
      } else {  // relu / leaky relu: f' from the sign of the old x
        const T slope = act == kRelu ? T(0) : static_cast<T>(kLeakySlope);
#pragma omp simd
        for (py::ssize_t b = 0; b < B; ++b) s[b] += g * ((s[b] > T(0) ? T(1) : slope) * gg[b] - e[b]);
      }
      if (refresh) activate(s, f, nullptr, B, act);
    }
    if (nudge) {
      T* s = S[L - 1].data;
      const T* e = E[L - 1].data;
      if (ce) {  // per sample: the softmax runs down the column (lse of the old column; each
                 // element is read before it is written)
#pragma omp for schedule(static)
        for (py::ssize_t b = 0; b < B; ++b) {
          const double lse = lse_strided(s + b, nL, B);
          const T bb = beta[b];
          for (py::ssize_t k = 0; k < nL; ++k) {
            T& sk = s[k * B + b];
            const T d = static_cast<T>(std::exp(static_cast<double>(sk) - lse)) - t.data[k * B + b];
            sk += g * (-e[k * B + b] - bb * d);
          }
        }
      } else {
#pragma omp for schedule(static)
        for (py::ssize_t k = 0; k < nL; ++k) {
          T* sk = s + k * B;
          const T* ek = e + k * B;
          const T* tk = t.data + k * B;
#pragma omp simd
          for (py::ssize_t b = 0; b < B; ++b) sk[b] += g * (-ek[b] - beta[b] * (sk[b] - tk[b]));
        }
      }
    }
  }
}

template <typename T>
void pc_act(py::list src_, py::object sub_, py::list f_, py::object df_, int act) {
  auto S = as_list<T>(src_, "src", false);
  auto F = as_list<T>(f_, "f", true);
  const bool has_sub = !sub_.is_none(), has_df = !df_.is_none();
  std::vector<Matrix<T>> Sub, D;
  if (has_sub) Sub = as_list<T>(sub_.cast<py::list>(), "sub", false);
  if (has_df) D = as_list<T>(df_.cast<py::list>(), "df", true);
  if (F.size() != S.size() || (has_sub && Sub.size() != S.size()) || (has_df && D.size() != S.size()))
    throw py::value_error("pc_act: lists of the same length expected");
  for (size_t l = 0; l < S.size(); ++l) {
    check_shape(F[l], S[l].rows, S[l].cols, "f[l]");
    if (has_sub) check_shape(Sub[l], S[l].rows, S[l].cols, "sub[l]");
    if (has_df) check_shape(D[l], S[l].rows, S[l].cols, "df[l]");
  }
  py::gil_scoped_release release;
  for (size_t l = 0; l < S.size(); ++l) {
    const py::ssize_t B = S[l].rows, n = S[l].cols;
#pragma omp parallel for schedule(static) if (B * n >= kParallelMin)
    for (py::ssize_t b = 0; b < B; ++b) {
      const T* v = S[l].data + b * n;
      T* f = F[l].data + b * n;
      if (has_sub) {
        const T* u = Sub[l].data + b * n;
#pragma omp simd
        for (py::ssize_t k = 0; k < n; ++k) f[k] = v[k] - u[k];
        v = f;
      }
      activate(v, f, has_df ? D[l].data + b * n : nullptr, n, act);
    }
  }
}

// dst[l] = src[l]^T for each pair of the lists, in tiles of kTile x kTile (both sides of a tile
// stay in L1); torch's strided copy ran at about 4 GB/s on these shapes.
template <typename T>
void pc_transpose(py::list src_, py::list dst_) {
  auto S = as_list<T>(src_, "src", false);
  auto D = as_list<T>(dst_, "dst", true);
  if (S.size() != D.size()) throw py::value_error("pc_transpose: lists of the same length expected");
  for (size_t l = 0; l < S.size(); ++l) check_shape(D[l], S[l].cols, S[l].rows, "dst[l]");
  constexpr py::ssize_t kTile = 32;
  py::gil_scoped_release release;
  for (size_t l = 0; l < S.size(); ++l) {
    const py::ssize_t R = S[l].rows, Cn = S[l].cols;
    const py::ssize_t tr = (R + kTile - 1) / kTile, tc = (Cn + kTile - 1) / kTile;
    const T* src = S[l].data;
    T* dst = D[l].data;
#pragma omp parallel for schedule(static) if (R * Cn >= kParallelMin)
    for (py::ssize_t tile = 0; tile < tr * tc; ++tile) {
      const py::ssize_t i0 = (tile / tc) * kTile, j0 = (tile % tc) * kTile;
      const py::ssize_t i1 = std::min(R, i0 + kTile), j1 = std::min(Cn, j0 + kTile);
      for (py::ssize_t j = j0; j < j1; ++j)
        for (py::ssize_t i = i0; i < i1; ++i) dst[j * R + i] = src[i * Cn + j];
    }
  }
}

bool list_is_f64(py::list l) { return is_float64(l[0].cast<py::array>()); }

}  // namespace
}  // namespace pc

void bind_pc_relax(py::module_& m) {
  using namespace pc;
  m.def(
      "pc_errors",
      [](py::list states, py::list mus, py::list errs, py::array target, py::object beta_rows,
         bool nudge, bool ce) {
        return list_is_f64(states) ? pc_errors<double>(states, mus, errs, target, beta_rows, nudge, ce)
                                   : pc_errors<float>(states, mus, errs, target, beta_rows, nudge, ce);
      },
      py::arg("states"), py::arg("mus"), py::arg("errs"), py::arg("target"), py::arg("beta_rows"),
      py::arg("nudge"), py::arg("ce"),
      "Units-major (units, rows) arrays; target (outputs, rows), beta_rows (1, rows). "
      "errs[l] = states[l] - mus[l] (errs may alias mus); clamped ce output: t - softmax(mu_L) per "
      "column. Returns (batch-mean energy (with beta_rows * loss(x_L, target) when nudging), "
      "[errs[l] has a nonzero element, per layer]).");
  m.def(
      "pc_update",
      [](py::list states, py::list errs, py::list gs, py::list fs, py::list dfs, py::array target,
         py::object beta_rows, double step, int act, bool nudge, bool ce, bool refresh, py::list use_g,
         py::list e_nonzero) {
        if (list_is_f64(states))
          pc_update<double>(states, errs, gs, fs, dfs, target, beta_rows, step, act, nudge, ce, refresh,
                            use_g, e_nonzero);
        else
          pc_update<float>(states, errs, gs, fs, dfs, target, beta_rows, step, act, nudge, ce, refresh,
                           use_g, e_nonzero);
      },
      py::arg("states"), py::arg("errs"), py::arg("gs"), py::arg("fs"), py::arg("dfs"), py::arg("target"),
      py::arg("beta_rows"), py::arg("step"), py::arg("act"), py::arg("nudge"), py::arg("ce"),
      py::arg("refresh"), py::arg("use_g"), py::arg("e_nonzero"),
      "Units-major (units, rows) arrays, as pc_errors. In place: hidden x_l += step (f'(x_l) * gs_l "
      "- e_l) (gs_l taken as 0 where not use_g[l]; a layer with neither g nor a nonzero error is "
      "left alone), then fs_l = f(x_l). f'(x_l): with refresh, formed from fs_l (which must hold "
      "f(x_l)) or x_l, and dfs is not touched; without, read from dfs (frozen). Nudged output "
      "x_L += step (-e_L - beta_b dloss/dx_L).");
  m.def(
      "pc_transpose",
      [](py::list src, py::list dst) {
        if (list_is_f64(src)) pc_transpose<double>(src, dst);
        else pc_transpose<float>(src, dst);
      },
      py::arg("src"), py::arg("dst"), "dst[l] = src[l]^T (C-contiguous, same dtype) for each pair.");
  m.def(
      "pc_act",
      [](py::list src, py::object sub, py::list f, py::object df, int act) {
        if (list_is_f64(src)) pc_act<double>(src, sub, f, df, act);
        else pc_act<float>(src, sub, f, df, act);
      },
      py::arg("src"), py::arg("sub"), py::arg("f"), py::arg("df"), py::arg("act"),
      "f[l] = act(src[l] - sub[l]) (sub may be None), df[l] = act'(...) (df may be None); "
      "act: 0 tanh, 1 relu, 2 leaky_relu (0.01), 3 identity.");
}

}  // namespace bpalts
