// The bpalts._C extension module: one bind_<op>() per op file in csrc/.
#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace bpalts {
void bind_hebbian_update(py::module_& m);
void bind_softwta_update(py::module_& m);
void bind_pc_relax(py::module_& m);
void bind_pc_weight_update(py::module_& m);
void bind_reservoir_run(py::module_& m);
void bind_ff_layer_step(py::module_& m);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "bpalts C++ CPU kernels (OpenMP); see csrc/ for one file per op.";
  m.def("openmp_threads", []() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  }, "Threads OpenMP will use (1 when built without OpenMP).");
  m.def("simd", []() {
#if defined(__AVX512F__)
    return "avx512f";
#elif defined(__AVX2__)
    return "avx2";
#elif defined(__ARM_NEON)
    return "neon";
#else
    return "none";
#endif
  }, "The widest vector instruction set the extension was compiled for (-march=native picks the "
     "building machine's; BPALTS_PORTABLE=1 builds without it). Hand-vectorised paths such as the "
     "CSR gathers of reservoir_run need avx2 or avx512f; the rest use GCC vector types, which any "
     "target compiles.");
  bpalts::bind_hebbian_update(m);
  bpalts::bind_softwta_update(m);
  bpalts::bind_pc_relax(m);
  bpalts::bind_pc_weight_update(m);
  bpalts::bind_reservoir_run(m);
  bpalts::bind_ff_layer_step(m);
}
