// Shared definitions for the WKV kernels (wkv7.cu, wkv6.cu) and their torch bindings (*_op.cpp).
//
// Plain CUDA C++: no torch headers, so `nvcc -c wkv7.cu` works on its own. Compile-time knobs:
//   WKV_N      head size (default 64); one thread per state row/column, so also the block size
//   WKV_FP32   r/k/v/a/b/y and their gradients in fp32 instead of bf16
// Log-decays (g = log(decay) <= 0) and all states are always fp32.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>

#ifndef WKV_N
#define WKV_N 64
#endif

// v7 saves the state every WKV_CHUNK steps for the backward pass; T must be a multiple of it.
#define WKV_CHUNK 16

#ifdef WKV_FP32
typedef float wkv_io_t;
#else
typedef __nv_bfloat16 wkv_io_t;
#endif

// __host__ too, so tests/kernels can run the kernels on the CPU (threads standing in for a block).
__host__ __device__ __forceinline__ float wkv_load(const float x) { return x; }
__host__ __device__ __forceinline__ float wkv_load(const __nv_bfloat16 x) { return __bfloat162float(x); }
__host__ __device__ __forceinline__ void wkv_store(float* p, const float x) { *p = x; }
__host__ __device__ __forceinline__ void wkv_store(__nv_bfloat16* p, const float x) { *p = __float2bfloat16_rn(x); }

// RWKV-7: S_t = S_{t-1} diag(exp(g_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T,  y_t = S_t r_t.
// Inputs [B, T, H, N] contiguous; states [B, H, N_value, N_key] (official layout).
// Forward writes y, the final state sT, and (when ckpt/sa are non-null, for the backward pass)
// ckpt [B, H, T/WKV_CHUNK, N, N] = the state after steps 15, 31, ... and sa [B, T, H, N] = S_{t-1} a_t.
// s0 may be null (zero initial state).
cudaError_t wkv7_forward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                const wkv_io_t* v, const wkv_io_t* a, const wkv_io_t* b, const float* s0,
                                wkv_io_t* y, float* sT, float* ckpt, float* sa, cudaStream_t stream);

// Gradients of the RWKV-7 forward. dsT (gradient of the final state) may be null (zero).
cudaError_t wkv7_backward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                 const wkv_io_t* v, const wkv_io_t* a, const wkv_io_t* b, const wkv_io_t* dy,
                                 const float* dsT, const float* ckpt, const float* sa, wkv_io_t* dr, float* dg,
                                 wkv_io_t* dk, wkv_io_t* dv, wkv_io_t* da, wkv_io_t* db, float* ds0,
                                 cudaStream_t stream);

// RWKV-6/5: y_t^T = r_t^T (S_{t-1} + diag(u) k_t v_t^T),  S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T.
// Inputs [B, T, H, N] contiguous; u [H, N] fp32; states [B, H, N_key, N_value]. Any T >= 1.
cudaError_t wkv6_forward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                const wkv_io_t* v, const float* u, const float* s0, wkv_io_t* y, float* sT,
                                cudaStream_t stream);

// Gradients of the RWKV-6 forward (it recomputes the states; nothing is saved). du comes back per batch
// element, [B, H, N], for the caller to sum. dsT may be null.
cudaError_t wkv6_backward_launch(int B, int T, int H, const wkv_io_t* r, const float* g, const wkv_io_t* k,
                                 const wkv_io_t* v, const float* u, const float* s0, const wkv_io_t* dy,
                                 const float* dsT, wkv_io_t* dr, float* dg, wkv_io_t* dk, wkv_io_t* dv, float* du,
                                 float* ds0, cudaStream_t stream);
