// ff_layer_step: C++ CPU kernel (OpenMP). Placeholder binding until the kernel lands.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace bpalts {
void bind_ff_layer_step(py::module_& m) { (void)m; }
}  // namespace bpalts
