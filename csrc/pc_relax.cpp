// Predictive-coding relaxation, C++ part (math and the Python side: bpalts/ops/pc_relax.py).
//
// The GEMMs run in MKL from Python into preallocated buffers (mu_l = f(x_{l-1}) W_l^T + b_l and
// g_l = e_{l+1} W_{l+1}). Everything elementwise in a step is fused here, all layers per call:
//
//   pc_errors: one pass per layer: e_l = x_l - mu_l (in place over the mu buffer, or into a
//     separate buffer when the predictions are fixed) and the per-row energy 0.5 |e_l|^2, plus
//     the output's special cases (clamped cross-entropy: e_L = t - softmax(mu_L), energy
//     -sum t log softmax(mu_L); nudging: + beta_b * loss(x_L, t)). Returns the batch-mean energy.
//     Row partials are in double and summed in row order (independent of the thread count).
//     It also reports which layers have a nonzero error: the Python side skips the GEMMs whose
//     input is exactly zero (after a feed-forward initialisation the error reaches layer l only
//     at step L - l) and the forward GEMMs whose input layer did not move. Exact: a skipped
//     product would have been exactly zero / exactly the stored one.
//   pc_update: one pass per hidden layer: x_l += gamma (-e_l + f'(x_l) g_l), and, while the row
//     is in cache, f(x_l) and f'(x_l) for the next step's GEMMs (layers that cannot move are
//     skipped); nudged output: x_L += gamma (-e_L - beta_b dloss/dx_L).
//   pc_act: f (and f') of a list of arrays (the initial states).
//
// float tanh is vectorised by hand (GCC vector extensions; std::tanh does not vectorise):
// tanh|x| = (1 - e) / (1 + e), e = exp(-2|x|) (Cephes expf), and Cephes' odd polynomial below
// |x| < 0.625 where that quotient cancels; a few ulp. double uses std::tanh.
// OpenMP over rows (static), serial below kParallelMin elements; C-contiguous numpy buffers.
#include "common.h"
#include "vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace bpalts {
namespace pc {

enum Act { kTanh = 0, kRelu = 1, kLeaky = 2, kIdentity = 3 };
constexpr double kLeakySlope = 0.01;
constexpr py::ssize_t kParallelMin = 1 << 15;

namespace {
using vec::v8f;
using vec::v8i;
using vec::tanh8;

inline void tanh_block(const float* v, float* f, float* df) {
  v8f x;
  std::memcpy(&x, v, sizeof(x));
  const v8f y = tanh8(x);
  std::memcpy(f, &y, sizeof(y));
  if (df) {
    const v8f d = 1.0f - y * y;
    std::memcpy(df, &d, sizeof(d));
  }
}
}  // namespace

// f(v) -> f, f'(v) -> df (df may be null); f may alias v.
void activate(const float* v, float* f, float* df, py::ssize_t n, int act) {
  if (act == kTanh) {
    py::ssize_t k = 0;
    for (; k + 8 <= n; k += 8) tanh_block(v + k, f + k, df ? df + k : nullptr);
    if (k < n) {
      alignas(32) float src[8] = {0}, fo[8], dfo[8];
      for (py::ssize_t i = 0; k + i < n; ++i) src[i] = v[k + i];
      tanh_block(src, fo, dfo);
      for (py::ssize_t i = 0; k + i < n; ++i) {
        f[k + i] = fo[i];
        if (df) df[k + i] = dfo[i];
      }
    }
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
void check_rows(const Matrix<T>& m, py::ssize_t B, py::ssize_t n, const char* name) {
  if (m.rows != B || m.cols != n) throw py::value_error(std::string(name) + " has the wrong shape");
}

// log-sum-exp of a row (double).
template <typename T>
double row_lse(const T* u, py::ssize_t n) {
  double m = static_cast<double>(u[0]);
  for (py::ssize_t k = 1; k < n; ++k) m = std::max(m, static_cast<double>(u[k]));
  double s = 0.0;
  for (py::ssize_t k = 0; k < n; ++k) s += std::exp(static_cast<double>(u[k]) - m);
  return m + std::log(s);
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
  const py::ssize_t B = S[0].rows;
  for (size_t l = 0; l < L; ++l) {
    check_rows(M[l], B, S[l].cols, "mus[l]");
    check_rows(E[l], B, S[l].cols, "errs[l]");
  }
  check_rows(t, B, S[L - 1].cols, "target");
  const T* beta = nullptr;
  if (nudge) {
    py::array b = beta_.cast<py::array>();
    auto bm = as_matrix<T>(b, "beta_rows", false);
    check_rows(bm, B, 1, "beta_rows");
    beta = bm.data;
  }
  std::vector<double> rowE(static_cast<size_t>(B), 0.0);
  std::vector<unsigned char> rowNZ(static_cast<size_t>(B) * L, 0);  // any e != 0 in (row, layer)
  py::ssize_t total = 0;
  for (auto& s : S) total += s.rows * s.cols;
  {
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
  for (py::ssize_t b = 0; b < B; ++b) {
    double acc = 0.0;
    unsigned char* nzr = rowNZ.data() + static_cast<size_t>(b) * L;
    for (size_t l = 0; l < L; ++l) {
      const py::ssize_t n = S[l].cols;
      const T* s = S[l].data + b * n;
      const T* mu = M[l].data + b * n;
      T* e = E[l].data + b * n;
      const T* tr = t.data + b * n;
      if (l + 1 == L && !nudge && ce) {
        const double lse = row_lse(mu, n);
        bool any = false;
        for (py::ssize_t k = 0; k < n; ++k) {
          const double lp = static_cast<double>(mu[k]) - lse;
          e[k] = static_cast<T>(static_cast<double>(tr[k]) - std::exp(lp));
          any |= e[k] != T(0);
          acc -= static_cast<double>(tr[k]) * lp;
        }
        nzr[l] = any;
        continue;
      }
      T sq = T(0);
      int any = 0;
#pragma omp simd reduction(+ : sq) reduction(| : any)
      for (py::ssize_t k = 0; k < n; ++k) {
        const T v = s[k] - mu[k];
        e[k] = v;
        sq += v * v;
        any |= (v != T(0));
      }
      nzr[l] = any != 0;
      acc += 0.5 * static_cast<double>(sq);
      if (l + 1 == L && nudge) {
        double loss = 0.0;
        if (ce) {
          const double lse = row_lse(s, n);
          for (py::ssize_t k = 0; k < n; ++k) loss -= static_cast<double>(tr[k]) * (static_cast<double>(s[k]) - lse);
        } else {
          for (py::ssize_t k = 0; k < n; ++k) {
            const double d = static_cast<double>(s[k]) - static_cast<double>(tr[k]);
            loss += 0.5 * d * d;
          }
        }
        acc += static_cast<double>(beta[b]) * loss;
      }
    }
    rowE[static_cast<size_t>(b)] = acc;
  }
  }
  double sum = 0.0;
  for (double v : rowE) sum += v;
  py::list nz;
  for (size_t l = 0; l < L; ++l) {
    bool any = false;
    for (py::ssize_t b = 0; b < B && !any; ++b) any = rowNZ[static_cast<size_t>(b) * L + l] != 0;
    nz.append(py::bool_(any));
  }
  return py::make_tuple(sum / static_cast<double>(B), nz);
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
  const py::ssize_t B = S[0].rows;
  for (size_t l = 0; l < L; ++l) check_rows(E[l], B, S[l].cols, "errs[l]");
  for (size_t l = 0; l + 1 < L; ++l) {
    check_rows(G[l], B, S[l].cols, "gs[l]");
    check_rows(F[l], B, S[l].cols, "fs[l]");
    check_rows(D[l], B, S[l].cols, "dfs[l]");
  }
  check_rows(t, B, S[L - 1].cols, "target");
  const T* beta = nullptr;
  if (nudge) {
    py::array b = beta_.cast<py::array>();
    auto bm = as_matrix<T>(b, "beta_rows", false);
    check_rows(bm, B, 1, "beta_rows");
    beta = bm.data;
  }
  if (use_g_.size() + 1 != L || e_nz_.size() != L)
    throw py::value_error("pc_update: use_g needs L-1 flags and e_nonzero L flags");
  // use_g[l]: g_l was computed (else it is exactly 0: e_{l+1} == 0); e_nz[l]: e_l has a nonzero.
  // A hidden layer with neither does not move (and keeps f, f').
  std::vector<char> use_g(L - 1), e_nz(L);
  for (size_t l = 0; l + 1 < L; ++l) use_g[l] = use_g_[l].cast<bool>();
  for (size_t l = 0; l < L; ++l) e_nz[l] = e_nz_[l].cast<bool>();
  const T g = static_cast<T>(step);
  py::ssize_t total = 0;
  for (auto& s : S) total += s.rows * s.cols;
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
  for (py::ssize_t b = 0; b < B; ++b) {
    for (size_t l = 0; l + 1 < L; ++l) {
      if (!use_g[l] && !e_nz[l]) continue;
      const py::ssize_t n = S[l].cols;
      T* s = S[l].data + b * n;
      const T* e = E[l].data + b * n;
      const T* gg = G[l].data + b * n;
      T* df = D[l].data + b * n;
      if (use_g[l]) {
#pragma omp simd
        for (py::ssize_t k = 0; k < n; ++k) s[k] += g * (df[k] * gg[k] - e[k]);
      } else {
#pragma omp simd
        for (py::ssize_t k = 0; k < n; ++k) s[k] -= g * e[k];
      }
      if (refresh) activate(s, F[l].data + b * n, df, n, act);
    }
    if (nudge) {
      const py::ssize_t n = S[L - 1].cols;
      T* s = S[L - 1].data + b * n;
      const T* e = E[L - 1].data + b * n;
      const T* tr = t.data + b * n;
      const T bb = beta[b];
      if (ce) {
        const double lse = row_lse(s, n);
        for (py::ssize_t k = 0; k < n; ++k) {
          const T d = static_cast<T>(std::exp(static_cast<double>(s[k]) - lse)) - tr[k];
          s[k] += g * (-e[k] - bb * d);
        }
      } else {
        for (py::ssize_t k = 0; k < n; ++k) s[k] += g * (-e[k] - bb * (s[k] - tr[k]));
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
    check_rows(F[l], S[l].rows, S[l].cols, "f[l]");
    if (has_sub) check_rows(Sub[l], S[l].rows, S[l].cols, "sub[l]");
    if (has_df) check_rows(D[l], S[l].rows, S[l].cols, "df[l]");
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
      "errs[l] = states[l] - mus[l] (errs may alias mus); clamped ce output: t - softmax(mu_L). "
      "Returns (batch-mean energy (with beta_rows * loss(x_L, target) when nudging), "
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
      "In place: hidden x_l += step (dfs_l * gs_l - e_l) (gs_l taken as 0 where not use_g[l]; a layer "
      "with neither g nor a nonzero error is left alone), then (refresh) fs_l = f(x_l), "
      "dfs_l = f'(x_l); nudged output x_L += step (-e_L - beta_b dloss/dx_L).");
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
