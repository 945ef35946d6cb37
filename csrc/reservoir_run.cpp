// reservoir_run: C++ CPU kernel (OpenMP). Placeholder binding until the kernel lands.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace bpalts {
void bind_reservoir_run(py::module_& m) { (void)m; }
}  // namespace bpalts
