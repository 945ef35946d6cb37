// Vectorised float math shared by the C++ kernels: 8- and 16-lane GCC vector types and
// Cephes-style expf / tanhf (about 2 ulp). One copy, used by softwta_update, pc_relax and reservoir_run.
#pragma once

#include <cstddef>
#include <cstring>

namespace bpalts {
namespace vec {

typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));
// 16 lanes: one AVX-512 register where the build has AVX-512 (else GCC splits them).
typedef float v16f __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));

// exp(x) for x <= 0 (Cephes expf: range reduction by ln 2, degree-5 polynomial); inputs below
// -87.3 give 0 (exp there is below the smallest normal float).
template <typename VF, typename VI>
inline VF exp_nonpositive_n(VF x) {
  const VF lo = VF{} - 87.3f;
  const VI under = x < lo;
  x = under ? lo : x;
  // n = floor(x * log2(e) + 0.5): truncation rounds toward zero, fix the negative ones down.
  const VF t = x * 1.44269504088896341f + 0.5f;
  VI n = __builtin_convertvector(t, VI);
  const VF nf0 = __builtin_convertvector(n, VF);
  n += (nf0 > t);  // -1 where truncation went up
  const VF nf = __builtin_convertvector(n, VF);
  x = x - nf * 0.693359375f - nf * -2.12194440e-4f;
  const VF z = x * x;
  VF y = 1.9875691500e-4f * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  const VF scale = (VF)((n + 127) << 23);  // 2^n, n >= -126: a normal float
  y = y * scale;
  return under ? VF{} : y;
}

// The 8- and 16-lane versions (the same operations, lane by lane).
inline v8f exp_nonpositive(v8f x) { return exp_nonpositive_n<v8f, v8i>(x); }
#if defined(__AVX512F__)  // (without it, GCC warns that a 64-byte vector return changes the ABI)
inline v16f exp_nonpositive(v16f x) { return exp_nonpositive_n<v16f, v16i>(x); }
#endif

// tanh (Cephes tanhf): |x| < 0.625: x + x^3 P(x^2); else (1 - e) / (1 + e) with e = exp(-2|x|).
// NaN stays NaN.
template <typename VF, typename VI>
inline VF tanh_n(VF x) {
  const VI neg = x < 0.0f;
  const VF a = neg ? -x : x;
  const VF e = exp_nonpositive_n<VF, VI>(-2.0f * a);
  const VF big = (1.0f - e) / (1.0f + e);
  const VF z = a * a;
  VF p = -5.70498872745e-3f * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const VF small = p * z * a + a;
  VF r = (a < 0.625f) ? small : big;
  r = neg ? -r : r;
  return (x != x) ? x : r;
}

inline v8f tanh8(v8f x) { return tanh_n<v8f, v8i>(x); }

// f[k] = tanh(v[k]) and, if df is not null, df[k] = 1 - f[k]^2, for k < n; f may alias v.
// 16 at a time where the build has AVX-512, then 8 at a time, the tail through a zero-padded
// block: every element gets the same float operations whichever way it goes.
template <typename VF, typename VI>
inline void tanh_block(const float* v, float* f, float* df) {
  VF x;
  std::memcpy(&x, v, sizeof(x));
  const VF y = tanh_n<VF, VI>(x);
  std::memcpy(f, &y, sizeof(y));
  if (df) {
    const VF d = 1.0f - y * y;
    std::memcpy(df, &d, sizeof(d));
  }
}

inline void tanh_span(const float* v, float* f, float* df, std::ptrdiff_t n) {
  std::ptrdiff_t k = 0;
#if defined(__AVX512F__)
  for (; k + 16 <= n; k += 16) tanh_block<v16f, v16i>(v + k, f + k, df ? df + k : nullptr);
#endif
  for (; k + 8 <= n; k += 8) tanh_block<v8f, v8i>(v + k, f + k, df ? df + k : nullptr);
  if (k < n) {
    alignas(32) float src[8] = {0}, fo[8], dfo[8];
    for (std::ptrdiff_t i = 0; k + i < n; ++i) src[i] = v[k + i];
    tanh_block<v8f, v8i>(src, fo, dfo);
    for (std::ptrdiff_t i = 0; k + i < n; ++i) {
      f[k + i] = fo[i];
      if (df) df[k + i] = dfo[i];
    }
  }
}

}  // namespace vec
}  // namespace bpalts
