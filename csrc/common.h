// Shared helpers for bpalts C++ kernels: checked access to numpy buffers (zero-copy views of
// CPU tensors). Kernels never copy silently: a buffer with the wrong dtype, layout or
// writability is a Python ValueError/TypeError naming the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace bpalts {
namespace py = pybind11;

template <typename T>
struct Matrix {
  T* data;
  py::ssize_t rows;
  py::ssize_t cols;
};

template <typename T>
Matrix<T> as_matrix(py::array& a, const char* name, bool writable) {
  if (!py::isinstance<py::array_t<T>>(a) || a.dtype().kind() != 'f' ||
      a.itemsize() != static_cast<py::ssize_t>(sizeof(T))) {
    throw py::type_error(std::string(name) + " has the wrong dtype for this kernel");
  }
  if (a.ndim() != 2) {
    throw py::value_error(std::string(name) + " must be 2-D, got " + std::to_string(a.ndim()) + "-D");
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " must be C-contiguous");
  }
  if (writable && !a.writeable()) {
    throw py::value_error(std::string(name) + " must be writable (it is updated in place)");
  }
  return Matrix<T>{static_cast<T*>(a.mutable_data()), a.shape(0), a.shape(1)};
}

inline bool is_float64(const py::array& a) { return a.dtype().kind() == 'f' && a.itemsize() == 8; }

}  // namespace bpalts
