// Torch binding of the RWKV-6/5 kernel (wkv6.cu) as ops in the namespace TORCH_EXTENSION_NAME:
//   forward(r, g, k, v, u, s0?) -> (y, sT)
//   backward(r, g, k, v, u, s0?, dy, dsT?) -> (dr, dg, dk, dv, du, ds0)   du is per batch element [B, H, N]
// r k v y dy and their gradients in the build's I/O dtype; g (log-decay), u, states in fp32.
// rwkv_tune/model/wkv/cuda.py wraps these in the custom ops rwkv_tune::wkv6_forward / wkv6_backward.
#include <ATen/ops/empty.h>

#include "wkv_op_utils.h"

namespace {

void wkv6_check_inputs(const at::Tensor& r, const at::Tensor& g, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& u, const std::optional<at::Tensor>& s0) {
  TORCH_CHECK(r.dim() == 4, "wkv6: r must be [B, T, H, N]");
  const int64_t B = r.size(0), H = r.size(2), N = r.size(3);
  TORCH_CHECK(N == WKV_N, "wkv6: head size ", N, " but this build is for ", WKV_N);
  const at::IntArrayRef shape = r.sizes();
  wkv_check(r, "r", kWkvIoType, shape);
  wkv_check(g, "g", at::kFloat, shape);
  wkv_check(k, "k", kWkvIoType, shape);
  wkv_check(v, "v", kWkvIoType, shape);
  wkv_check(u, "u", at::kFloat, {H, N});
  if (s0.has_value()) wkv_check(*s0, "s0", at::kFloat, {B, H, N, N});
}

std::tuple<at::Tensor, at::Tensor> wkv6_forward(const at::Tensor& r, const at::Tensor& g, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& u,
                                                const std::optional<at::Tensor>& s0) {
  wkv6_check_inputs(r, g, k, v, u, s0);
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  const c10::cuda::CUDAGuard guard(r.device());
  at::Tensor y = at::empty(r.sizes(), r.options());
  at::Tensor sT = at::empty({B, H, N, N}, r.options().dtype(at::kFloat));
  wkv_check_launch(wkv6_forward_launch(B, T, H, wkv_io(r), wkv_f32(g), wkv_io(k), wkv_io(v), wkv_f32(u),
                                       wkv_f32_or_null(s0), wkv_io_mut(y), sT.mutable_data_ptr<float>(),
                                       c10::cuda::getCurrentCUDAStream().stream()),
                   "wkv6 forward");
  return {y, sT};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> wkv6_backward(
    const at::Tensor& r, const at::Tensor& g, const at::Tensor& k, const at::Tensor& v, const at::Tensor& u,
    const std::optional<at::Tensor>& s0, const at::Tensor& dy, const std::optional<at::Tensor>& dsT) {
  wkv6_check_inputs(r, g, k, v, u, s0);
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  wkv_check(dy, "dy", kWkvIoType, r.sizes());
  if (dsT.has_value()) wkv_check(*dsT, "dsT", at::kFloat, {B, H, N, N});
  const c10::cuda::CUDAGuard guard(r.device());
  const auto f32 = r.options().dtype(at::kFloat);
  at::Tensor dr = at::empty(r.sizes(), r.options()), dk = at::empty(r.sizes(), r.options());
  at::Tensor dv = at::empty(r.sizes(), r.options());
  at::Tensor dg = at::empty(r.sizes(), f32);
  at::Tensor du = at::empty({B, H, N}, f32);
  at::Tensor ds0 = at::empty({B, H, N, N}, f32);
  wkv_check_launch(wkv6_backward_launch(B, T, H, wkv_io(r), wkv_f32(g), wkv_io(k), wkv_io(v), wkv_f32(u),
                                        wkv_f32_or_null(s0), wkv_io(dy), wkv_f32_or_null(dsT), wkv_io_mut(dr),
                                        dg.mutable_data_ptr<float>(), wkv_io_mut(dk), wkv_io_mut(dv),
                                        du.mutable_data_ptr<float>(), ds0.mutable_data_ptr<float>(),
                                        c10::cuda::getCurrentCUDAStream().stream()),
                   "wkv6 backward");
  return {dr, dg, dk, dv, du, ds0};
}

}  // namespace

WKV_LIBRARY(m) {
  m.def("forward(Tensor r, Tensor g, Tensor k, Tensor v, Tensor u, Tensor? s0) -> (Tensor, Tensor)");
  m.def("backward(Tensor r, Tensor g, Tensor k, Tensor v, Tensor u, Tensor? s0, Tensor dy, Tensor? dsT)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

WKV_LIBRARY_IMPL(m) {
  m.impl("forward", &wkv6_forward);
  m.impl("backward", &wkv6_backward);
}
