// Forward-forward layer step, C++ part (see bpalts/ops/ff_layer_step.py for the math and the
// Python side).
//
// The GEMMs run in MKL from Python on the raw (un-normalised) inputs: Z = X W^T (B x N) and
// grad_W = D^T X. This file fuses everything around them:
//
//   ff_row_scale  s_b = 1 / (sqrt(mean_j x_bj^2) + eps)    (one pass over X, rows in parallel)
//   ff_epilogue   per row b, in place on Z (rows in parallel; each row is one thread's work):
//       z = s_b * Z_b + bias, h = relu(z) -> Z_b, G_b = sum_n h^2,
//       t = sign * (G_b + offset_b - theta)   (sign +1: positive data, -1: negative data)
//       loss_b = softplus(-t), dL/dG_b = -sign * sigmoid(-t) / B,
//       coef2_b = 2 dL/dG_b,  D_b = coef2_b * s_b * h   (so that D^T X = delta^T X^).
//     Returns sum_b loss_b / B (summed in double in row order: deterministic).
//
// float and double; OpenMP over rows, serial below kParallelMin elements; C-contiguous numpy
// buffers (zero-copy views of tensors).
#include "common.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace bpalts {

namespace {

constexpr py::ssize_t kParallelMin = 1 << 15;

// sum_j v_j^2 in double with 8 independent partial sums (a fixed partition: deterministic).
// A single running double sum is a serial chain GCC will not vectorise or reorder without
// -ffast-math (measured 20x slower than this on a 256 x 484 epilogue).
template <typename T>
inline double sum_squares(const T* v, py::ssize_t n) {
  double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  py::ssize_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int k = 0; k < 8; ++k) p[k] += static_cast<double>(v[j + k]) * static_cast<double>(v[j + k]);
  }
  for (; j < n; ++j) p[0] += static_cast<double>(v[j]) * static_cast<double>(v[j]);
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

inline double softplus(double t) { return std::max(t, 0.0) + std::log1p(std::exp(-std::fabs(t))); }
inline double sigmoid(double t) {
  if (t >= 0) return 1.0 / (1.0 + std::exp(-t));
  const double e = std::exp(t);
  return e / (1.0 + e);
}

template <typename T>
void ff_row_scale(py::array& X_, py::array& s_, double eps) {
  auto X = as_matrix<T>(X_, "x", false);
  auto s = as_matrix<T>(s_, "s", true);
  const py::ssize_t B = X.rows, D = X.cols;
  if (s.rows != B || s.cols != 1) throw py::value_error("s must be (batch, 1)");
  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (B * D >= kParallelMin)
  for (py::ssize_t r = 0; r < B; ++r) {
    const double acc = sum_squares(X.data + r * D, D);
    s.data[r] = static_cast<T>(1.0 / (std::sqrt(acc / static_cast<double>(D)) + eps));
  }
}

template <typename T>
double ff_epilogue(py::array& Z_, py::array& D_, py::array& s_, py::array& bias_, py::array& off_,
                   py::array& g_, py::array& c2_, double theta, double sign, double inv_batch) {
  auto Z = as_matrix<T>(Z_, "Z", true);
  auto Dm = as_matrix<T>(D_, "D", true);
  auto s = as_matrix<T>(s_, "s", false);
  auto bias = as_matrix<T>(bias_, "bias", false);
  auto off = as_matrix<T>(off_, "offset", false);
  auto g = as_matrix<T>(g_, "g", true);
  auto c2 = as_matrix<T>(c2_, "coef2", true);
  const py::ssize_t B = Z.rows, N = Z.cols;
  if (Dm.rows != B || Dm.cols != N) throw py::value_error("D must have Z's shape (batch, units)");
  if (bias.rows != 1 || bias.cols != N) throw py::value_error("bias must be (1, units)");
  for (auto* m : {&s, &off, &g, &c2}) {
    if (m->rows != B || m->cols != 1) throw py::value_error("s, offset, g, coef2 must be (batch, 1)");
  }
  std::vector<double> row_loss(static_cast<size_t>(B));
  {
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (B * N >= kParallelMin)
    for (py::ssize_t r = 0; r < B; ++r) {
      T* z = Z.data + r * N;
      T* d = Dm.data + r * N;
      const T* bb = bias.data;
      const T sr = s.data[r];
      // Three simple passes over the row (each vectorises; the row stays in L1/L2).
#pragma omp simd
      for (py::ssize_t n = 0; n < N; ++n) {
        const T h = sr * z[n] + bb[n];
        z[n] = h > T(0) ? h : T(0);
      }
      const double G = sum_squares(z, N);
      const double t = sign * (G + static_cast<double>(off.data[r]) - theta);
      row_loss[static_cast<size_t>(r)] = softplus(-t);
      const double coef2 = -2.0 * sign * sigmoid(-t) * inv_batch;
      g.data[r] = static_cast<T>(G);
      c2.data[r] = static_cast<T>(coef2);
      const T f = static_cast<T>(coef2 * static_cast<double>(sr));
#pragma omp simd
      for (py::ssize_t n = 0; n < N; ++n) d[n] = f * z[n];
    }
  }
  double total = 0.0;
  for (double v : row_loss) total += v;
  return total * inv_batch;
}

}  // namespace

void bind_ff_layer_step(py::module_& m) {
  m.def(
      "ff_row_scale",
      [](py::array x, py::array s, double eps) {
        if (is_float64(x)) ff_row_scale<double>(x, s, eps);
        else ff_row_scale<float>(x, s, eps);
      },
      py::arg("x"), py::arg("s"), py::arg("eps"),
      "s (batch, 1) <- 1 / (sqrt(mean_j x_bj^2) + eps) for x (batch, features).");
  m.def(
      "ff_epilogue",
      [](py::array Z, py::array D, py::array s, py::array bias, py::array off, py::array g,
         py::array c2, double theta, double sign, double inv_batch) {
        if (is_float64(Z)) return ff_epilogue<double>(Z, D, s, bias, off, g, c2, theta, sign, inv_batch);
        return ff_epilogue<float>(Z, D, s, bias, off, g, c2, theta, sign, inv_batch);
      },
      py::arg("Z"), py::arg("D"), py::arg("s"), py::arg("bias"), py::arg("offset"), py::arg("g"),
      py::arg("coef2"), py::arg("theta"), py::arg("sign"), py::arg("inv_batch"),
      "In place: Z (batch, units) <- h = relu(s * Z + bias); g <- sum h^2; with "
      "t = sign * (g + offset - theta): coef2 <- -2 sign sigmoid(-t) inv_batch, "
      "D <- coef2 * s * h. Returns inv_batch * sum softplus(-t).");
}

}  // namespace bpalts
