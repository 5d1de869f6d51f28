// Torch binding of the RWKV-7 kernel (wkv7.cu) as ops in the namespace TORCH_EXTENSION_NAME:
//   forward(r, g, k, v, a, b, s0?, save) -> (y, sT, ckpt, sa)
//   backward(r, g, k, v, a, b, dy, dsT?, ckpt, sa) -> (dr, dg, dk, dv, da, db, ds0)
// r k v a b y dy and their gradients in the build's I/O dtype; g (log-decay), states, ckpt, sa in fp32.
// rwkv_tune/model/wkv/cuda.py wraps these in the custom ops rwkv_tune::wkv7_forward / wkv7_backward.
#include <ATen/ops/empty.h>

#include "wkv_op_utils.h"

namespace {

// The checks forward and backward share: [B, T, H, N] inputs of this build's head size, T a multiple of
// the checkpoint chunk, I/O dtype for r k v a b and fp32 for the log-decay g.
void check_inputs(const at::Tensor& r, const at::Tensor& g, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(r.dim() == 4, "wkv7: r must be [B, T, H, N]");
  const int64_t T = r.size(1), N = r.size(3);
  TORCH_CHECK(N == WKV_N, "wkv7: head size ", N, " but this build is for ", WKV_N);
  TORCH_CHECK(T % WKV_CHUNK == 0, "wkv7: T = ", T, " must be a multiple of ", WKV_CHUNK, " (pad on the Python side)");
  const at::IntArrayRef shape = r.sizes();
  wkv_check(r, "r", kWkvIoType, shape);
  wkv_check(g, "g", at::kFloat, shape);
  wkv_check(k, "k", kWkvIoType, shape);
  wkv_check(v, "v", kWkvIoType, shape);
  wkv_check(a, "a", kWkvIoType, shape);
  wkv_check(b, "b", kWkvIoType, shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> wkv7_forward(
    const at::Tensor& r, const at::Tensor& g, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const at::Tensor& b, const std::optional<at::Tensor>& s0, bool save) {
  check_inputs(r, g, k, v, a, b);
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  const at::IntArrayRef shape = r.sizes();
  if (s0.has_value()) wkv_check(*s0, "s0", at::kFloat, {B, H, N, N});

  const c10::cuda::CUDAGuard guard(r.device());
  const auto f32 = r.options().dtype(at::kFloat);
  at::Tensor y = at::empty(shape, r.options());
  at::Tensor sT = at::empty({B, H, N, N}, f32);
  at::Tensor ckpt = save ? at::empty({B, H, T / WKV_CHUNK, N, N}, f32) : at::empty({0}, f32);
  at::Tensor sa = save ? at::empty(shape, f32) : at::empty({0}, f32);
  wkv_check_launch(
      wkv7_forward_launch(B, T, H, wkv_io(r), wkv_f32(g), wkv_io(k), wkv_io(v), wkv_io(a), wkv_io(b),
                          wkv_f32_or_null(s0), wkv_io_mut(y), sT.mutable_data_ptr<float>(),
                          save ? ckpt.mutable_data_ptr<float>() : nullptr, save ? sa.mutable_data_ptr<float>() : nullptr,
                          c10::cuda::getCurrentCUDAStream().stream()),
      "wkv7 forward");
  return {y, sT, ckpt, sa};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> wkv7_backward(
    const at::Tensor& r, const at::Tensor& g, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const at::Tensor& b, const at::Tensor& dy, const std::optional<at::Tensor>& dsT, const at::Tensor& ckpt,
    const at::Tensor& sa) {
  check_inputs(r, g, k, v, a, b);
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  const at::IntArrayRef shape = r.sizes();
  wkv_check(dy, "dy", kWkvIoType, shape);
  if (dsT.has_value()) wkv_check(*dsT, "dsT", at::kFloat, {B, H, N, N});
  wkv_check(ckpt, "ckpt", at::kFloat, {B, H, T / WKV_CHUNK, N, N});
  wkv_check(sa, "sa", at::kFloat, shape);

  const c10::cuda::CUDAGuard guard(r.device());
  const auto f32 = r.options().dtype(at::kFloat);
  at::Tensor dr = at::empty(shape, r.options()), dk = at::empty(shape, r.options());
  at::Tensor dv = at::empty(shape, r.options()), da = at::empty(shape, r.options());
  at::Tensor db = at::empty(shape, r.options());
  at::Tensor dg = at::empty(shape, f32);
  at::Tensor ds0 = at::empty({B, H, N, N}, f32);
  wkv_check_launch(
      wkv7_backward_launch(B, T, H, wkv_io(r), wkv_f32(g), wkv_io(k), wkv_io(v), wkv_io(a), wkv_io(b), wkv_io(dy),
                           wkv_f32_or_null(dsT), wkv_f32(ckpt), wkv_f32(sa), wkv_io_mut(dr),
                           dg.mutable_data_ptr<float>(), wkv_io_mut(dk), wkv_io_mut(dv), wkv_io_mut(da),
                           wkv_io_mut(db), ds0.mutable_data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream()),
      "wkv7 backward");
  return {dr, dg, dk, dv, da, db, ds0};
}

}  // namespace

WKV_LIBRARY(m) {
  m.def("forward(Tensor r, Tensor g, Tensor k, Tensor v, Tensor a, Tensor b, Tensor? s0, bool save)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("backward(Tensor r, Tensor g, Tensor k, Tensor v, Tensor a, Tensor b, Tensor dy, Tensor? dsT,"
        " Tensor ckpt, Tensor sa) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

WKV_LIBRARY_IMPL(m) {
  m.impl("forward", &wkv7_forward);
  m.impl("backward", &wkv7_backward);
}
