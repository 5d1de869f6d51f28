// Launchers for the WKV6 kernels in wkv6_kernels.cuh (declared in wkv_common.h).
#include "wkv6_kernels.cuh"

using namespace wkv6_impl;

cudaError_t wkv6_forward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                const wkv_io_t* v, const float* u, const float* s0, wkv_io_t* y, float* sT,
                                cudaStream_t stream) {
  if (B <= 0 || H <= 0 || T <= 0) return cudaErrorInvalidValue;
  wkv6_forward_kernel<<<dim3(H, B), dim3(N), 0, stream>>>(T, H, r, g, k, v, u, s0, y, sT);
  return cudaGetLastError();
}

cudaError_t wkv6_backward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                 const wkv_io_t* v, const float* u, const float* s0, const wkv_io_t* dy,
                                 const float* dsT, wkv_io_t* dr, float* dg, wkv_io_t* dk, wkv_io_t* dv, float* du,
                                 float* ds0, cudaStream_t stream) {
  if (B <= 0 || H <= 0 || T <= 0) return cudaErrorInvalidValue;
  wkv6_backward_kernel<<<dim3(H, B), dim3(N), 0, stream>>>(T, H, r, g, k, v, u, s0, dy, dsT, dr, dg, dk, dv, du,
                                                           ds0);
  return cudaGetLastError();
}
