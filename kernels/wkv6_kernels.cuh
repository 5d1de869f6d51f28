// RWKV-6 (and RWKV-5, with its static decay expanded over T) WKV forward and backward.
// One block of WKV_N threads per (batch, head); the fp32 state lives in registers; no limit on T.
//
// The v6 decay is not bounded away from zero, so the backward cannot step the state backwards the
// way the v7 kernel does. Instead it runs two passes:
//   A (forward in time)  recomputes S_{t-1} and gives dr_t and du, plus the "read" half of dG_t;
//   B (backward in time) carries dS_t = dL/dS_t and gives dk_t, dv_t, the "write" half of dG_t,
//                        and dg_t = sum_{m >= t} dG_m.
// Here G_m = g_0 + ... + g_m, and with D_m = dL/dS_m from reads of S_m alone (r_{m+1} dy_{m+1}^T, or
// dsT for m = T-1):  dL/dG_m[i] = sum_j D_m[i,j] S_m[i,j] - k_m[i] sum_j dS_m[i,j] v_m[j].
//
// As in wkv7, each step's inputs are loaded one step ahead so memory latency overlaps arithmetic.
//
// Kernels only; the launches are in wkv6.cu, so tests/kernels can also run these on the CPU.
#pragma once

#include "wkv_common.h"

namespace wkv6_impl {

constexpr int N = WKV_N;

// One step's inputs for one thread, as stored in memory (converted when used, after the loads land).
struct ForwardStep {
  wkv_io_t r, k, v;
  float g;
};

struct Step {
  wkv_io_t r, k, v, dy;
  float g;
};

// Thread c owns column c of S (value c): Sc[i] = S[i][c].
__global__ void __launch_bounds__(WKV_N) wkv6_forward_kernel(
    int T, int H, const wkv_io_t* __restrict__ r, const float* __restrict__ g, const wkv_io_t* __restrict__ k,
    const wkv_io_t* __restrict__ v, const float* __restrict__ u, const float* __restrict__ s0,
    wkv_io_t* __restrict__ y, float* __restrict__ sT) {
  const int h = blockIdx.x, bb = blockIdx.y, c = threadIdx.x;
  const int64_t bh = (int64_t)bb * H + h;
  const auto offset = [&](int t) { return (((int64_t)bb * T + t) * H + h) * N + c; };
  const auto fetch = [&](int t) {
    const int64_t o = offset(t);
    return ForwardStep{r[o], k[o], v[o], g[o]};
  };

  __shared__ __align__(16) float r_s[N], d_s[N], k_s[N], uk_s[N];
  const float uc = u[h * N + c];

  float Sc[N];
#pragma unroll
  for (int i = 0; i < N; i++) Sc[i] = s0 != nullptr ? s0[bh * N * N + (int64_t)i * N + c] : 0.f;

  ForwardStep next = fetch(0);
  for (int t = 0; t < T; t++) {
    const ForwardStep cur = next;
    const float kc = wkv_load(cur.k), vc = wkv_load(cur.v);
    __syncthreads();
    r_s[c] = wkv_load(cur.r); d_s[c] = expf(cur.g); k_s[c] = kc; uk_s[c] = uc * kc;
    __syncthreads();
    if (t + 1 < T) next = fetch(t + 1);
    float yc = 0.f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      yc = fmaf(r_s[i], fmaf(uk_s[i], vc, Sc[i]), yc);
      Sc[i] = fmaf(Sc[i], d_s[i], k_s[i] * vc);
    }
    wkv_store(y + offset(t), yc);
  }
#pragma unroll
  for (int i = 0; i < N; i++) sT[bh * N * N + (int64_t)i * N + c] = Sc[i];
}

__global__ void __launch_bounds__(WKV_N) wkv6_backward_kernel(
    int T, int H, const wkv_io_t* __restrict__ r, const float* __restrict__ g, const wkv_io_t* __restrict__ k,
    const wkv_io_t* __restrict__ v, const float* __restrict__ u, const float* __restrict__ s0,
    const wkv_io_t* __restrict__ dy, const float* __restrict__ dsT, wkv_io_t* __restrict__ dr, float* dg,
    wkv_io_t* __restrict__ dk, wkv_io_t* __restrict__ dv, float* __restrict__ du, float* __restrict__ ds0) {
  const int h = blockIdx.x, bb = blockIdx.y, c = threadIdx.x;
  const int64_t bh = (int64_t)bb * H + h;
  const float uc = u[h * N + c];
  const auto offset = [&](int t) { return (((int64_t)bb * T + t) * H + h) * N + c; };
  const auto fetch = [&](int t) {
    const int64_t o = offset(t);
    return Step{r[o], k[o], v[o], dy[o], g[o]};
  };

  __shared__ __align__(16) float r_s[N], d_s[N], k_s[N], uk_s[N], v_s[N], dy_s[N];

  // Pass A: thread c owns row c of S (key c). dg first holds the read half of dG.
  {
    float Sr[N];
#pragma unroll
    for (int j = 0; j < N; j++) Sr[j] = s0 != nullptr ? s0[bh * N * N + (int64_t)c * N + j] : 0.f;
    float du_c = 0.f;
    Step next = fetch(0);
    for (int t = 0; t < T; t++) {
      const Step cur = next;
      const float rc = wkv_load(cur.r), dc = expf(cur.g), kc = wkv_load(cur.k);
      __syncthreads();
      v_s[c] = wkv_load(cur.v); dy_s[c] = wkv_load(cur.dy);
      __syncthreads();
      if (t + 1 < T) next = fetch(t + 1);
      float read = 0.f, dyv = 0.f;  // read = sum_j dy[j] S_{t-1}[c][j]
#pragma unroll
      for (int j = 0; j < N; j++) {
        read = fmaf(dy_s[j], Sr[j], read);
        dyv = fmaf(dy_s[j], v_s[j], dyv);
        Sr[j] = fmaf(Sr[j], dc, kc * v_s[j]);
      }
      wkv_store(dr + offset(t), fmaf(uc * kc, dyv, read));
      du_c = fmaf(rc * kc, dyv, du_c);
      if (t > 0) dg[offset(t - 1)] = rc * read;
    }
    float last = 0.f;
    if (dsT != nullptr) {
#pragma unroll
      for (int j = 0; j < N; j++) last = fmaf(dsT[bh * N * N + (int64_t)c * N + j], Sr[j], last);
    }
    dg[offset(T - 1)] = last;
    du[bh * N + c] = du_c;
  }

  // Pass B: thread c owns row c (key c) and column c (value c) of dS.
  float dSr[N], dSc[N];
  if (dsT != nullptr) {
    const float* p = dsT + bh * N * N;
#pragma unroll
    for (int x = 0; x < N; x++) {
      dSr[x] = p[(int64_t)c * N + x];
      dSc[x] = p[(int64_t)x * N + c];
    }
  } else {
#pragma unroll
    for (int x = 0; x < N; x++) dSr[x] = dSc[x] = 0.f;
  }
  float dg_acc = 0.f;
  Step next = fetch(T - 1);
  for (int t = T - 1; t >= 0; t--) {
    const Step cur = next;
    const float rc = wkv_load(cur.r), dc = expf(cur.g), kc = wkv_load(cur.k);
    const float vc = wkv_load(cur.v), dyc = wkv_load(cur.dy);
    __syncthreads();
    r_s[c] = rc; d_s[c] = dc; k_s[c] = kc; uk_s[c] = uc * kc; v_s[c] = vc; dy_s[c] = dyc;
    __syncthreads();
    if (t > 0) next = fetch(t - 1);

    // Row c (key c): dk and the write half of dG; then dS_{t-1} = diag(d) dS_t + r dy^T.
    float write = 0.f, dyv = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      write = fmaf(dSr[j], v_s[j], write);
      dyv = fmaf(dy_s[j], v_s[j], dyv);
      dSr[j] = fmaf(dSr[j], dc, rc * dy_s[j]);
    }
    const int64_t o = offset(t);
    wkv_store(dk + o, fmaf(rc * uc, dyv, write));
    dg_acc += dg[o] - kc * write;
    dg[o] = dg_acc;

    // Column c (value c): dv.
    float dv_c = 0.f, ruk = 0.f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      dv_c = fmaf(dSc[i], k_s[i], dv_c);
      ruk = fmaf(r_s[i], uk_s[i], ruk);
      dSc[i] = fmaf(dSc[i], d_s[i], r_s[i] * dyc);
    }
    wkv_store(dv + o, fmaf(dyc, ruk, dv_c));
  }
  if (ds0 != nullptr) {
#pragma unroll
    for (int i = 0; i < N; i++) ds0[bh * N * N + (int64_t)i * N + c] = dSc[i];
  }
}

}  // namespace wkv6_impl
