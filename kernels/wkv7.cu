// Launchers for the WKV7 kernels in wkv7_kernels.cuh (declared in wkv_common.h).
#include "wkv7_kernels.cuh"

using namespace wkv7_impl;

cudaError_t wkv7_forward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                const wkv_io_t* v, const wkv_io_t* a, const wkv_io_t* b, const float* s0,
                                wkv_io_t* y, float* sT, float* ckpt, float* sa, cudaStream_t stream) {
  if (B <= 0 || H <= 0 || T <= 0 || T % WKV_CHUNK != 0) return cudaErrorInvalidValue;
  wkv7_forward_kernel<<<dim3(H, B), dim3(N), 0, stream>>>(T, H, r, g, k, v, a, b, s0, y, sT, ckpt, sa);
  return cudaGetLastError();
}

cudaError_t wkv7_backward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                 const wkv_io_t* v, const wkv_io_t* a, const wkv_io_t* b, const wkv_io_t* dy,
                                 const float* dsT, const float* ckpt, const float* sa, wkv_io_t* dr, float* dg,
                                 wkv_io_t* dk, wkv_io_t* dv, wkv_io_t* da, wkv_io_t* db, float* ds0,
                                 cudaStream_t stream) {
  if (B <= 0 || H <= 0 || T <= 0 || T % WKV_CHUNK != 0) return cudaErrorInvalidValue;
  wkv7_backward_kernel<<<dim3(H, B), dim3(N), 0, stream>>>(T, H, r, g, k, v, a, b, dy, dsT, ckpt, sa, dr, dg, dk,
                                                           dv, da, db, ds0);
  return cudaGetLastError();
}
