// Helpers shared by the torch bindings (wkv7_op.cpp, wkv6_op.cpp); torch headers are fine here,
// the .cu files never include this file.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "wkv_common.h"

// TORCH_LIBRARY pastes its namespace argument, so expand TORCH_EXTENSION_NAME (set by the JIT build to
// the cache key, e.g. rwkv_tune_wkv7_n64_bf16_sm90) first.
#define WKV_LIBRARY_EXPAND(ns, m) TORCH_LIBRARY(ns, m)
#define WKV_LIBRARY(m) WKV_LIBRARY_EXPAND(TORCH_EXTENSION_NAME, m)
#define WKV_LIBRARY_IMPL_EXPAND(ns, k, m) TORCH_LIBRARY_IMPL(ns, k, m)
#define WKV_LIBRARY_IMPL(m) WKV_LIBRARY_IMPL_EXPAND(TORCH_EXTENSION_NAME, CUDA, m)

#ifdef WKV_FP32
constexpr c10::ScalarType kWkvIoType = c10::ScalarType::Float;
#else
constexpr c10::ScalarType kWkvIoType = c10::ScalarType::BFloat16;
#endif

inline void wkv_check(const at::Tensor& x, const char* name, c10::ScalarType dtype, at::IntArrayRef shape) {
  TORCH_CHECK(x.is_cuda(), "wkv: ", name, " must be a CUDA tensor");
  TORCH_CHECK(x.scalar_type() == dtype, "wkv: ", name, " must be ", dtype, ", got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "wkv: ", name, " must be contiguous");
  TORCH_CHECK(x.sizes() == shape, "wkv: ", name, " has shape ", x.sizes(), ", expected ", shape);
}

inline const wkv_io_t* wkv_io(const at::Tensor& x) { return reinterpret_cast<const wkv_io_t*>(x.const_data_ptr()); }
inline wkv_io_t* wkv_io_mut(at::Tensor& x) { return reinterpret_cast<wkv_io_t*>(x.mutable_data_ptr()); }
inline const float* wkv_f32(const at::Tensor& x) { return x.const_data_ptr<float>(); }
inline const float* wkv_f32_or_null(const std::optional<at::Tensor>& x) {
  return x.has_value() && x->defined() ? x->const_data_ptr<float>() : nullptr;
}

inline void wkv_check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "wkv: ", what, " failed: ", cudaGetErrorString(err));
}
