// RWKV-7 WKV forward and backward. One block of WKV_N threads per (batch, head); the N x N fp32 state
// lives in registers. The kernel takes the log-decay g (decay = exp(g)), not the official w.
//
// Backward walks t = T-1 ... 0 and recovers S_{t-1} from S_t by undoing one step ("backstepping"):
//   d_t * S_{t-1}[i, j] = S_t[i, j] - sa_t[i] b_t[j] - v_t[i] k_t[j]
// which needs sa_t = S_{t-1} a_t (saved by the forward) and divides by the decay. RWKV-7 keeps
// decay >= exp(-e^-0.5) = 0.545, so one step amplifies rounding by at most 1.84x; restarting from a
// saved state every WKV_CHUNK steps keeps the error bounded for any T.
//
// Each step's inputs are loaded one step ahead (into registers) so the global-memory latency overlaps
// the previous step's arithmetic.
//
// Kernels only; the launches are in wkv7.cu, so tests/kernels can also run these on the CPU.
#pragma once

#include "wkv_common.h"

namespace wkv7_impl {

constexpr int N = WKV_N;

// One step's inputs for one thread, as stored in memory (converted when used, after the loads land).
struct ForwardStep {
  wkv_io_t r, k, a, b, v;
  float g;
};

struct BackwardStep {
  wkv_io_t r, k, a, b, v, dy;
  float g, sa;
};

__global__ void __launch_bounds__(WKV_N) wkv7_forward_kernel(
    int T, int H, const wkv_io_t* __restrict__ r, const float* __restrict__ g, const wkv_io_t* __restrict__ k,
    const wkv_io_t* __restrict__ v, const wkv_io_t* __restrict__ a, const wkv_io_t* __restrict__ b,
    const float* __restrict__ s0, wkv_io_t* __restrict__ y, float* __restrict__ sT, float* __restrict__ ckpt,
    float* __restrict__ sa_out) {
  const int h = blockIdx.x, bb = blockIdx.y, i = threadIdx.x;  // this thread owns state row i (value i)
  const int64_t bh = (int64_t)bb * H + h;
  const auto offset = [&](int t) { return (((int64_t)bb * T + t) * H + h) * N + i; };
  const auto fetch = [&](int t) {
    const int64_t o = offset(t);
    return ForwardStep{r[o], k[o], a[o], b[o], v[o], g[o]};
  };

  __shared__ __align__(16) float r_s[N], d_s[N], k_s[N], a_s[N], b_s[N];

  float S[N];
  if (s0 != nullptr) {
    const float4* p = reinterpret_cast<const float4*>(s0 + bh * N * N + (int64_t)i * N);
#pragma unroll
    for (int q = 0; q < N / 4; q++) {
      const float4 x = p[q];
      S[4 * q] = x.x; S[4 * q + 1] = x.y; S[4 * q + 2] = x.z; S[4 * q + 3] = x.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; j++) S[j] = 0.f;
  }

  ForwardStep next = fetch(0);
  for (int t = 0; t < T; t++) {
    const ForwardStep cur = next;
    __syncthreads();
    r_s[i] = wkv_load(cur.r);
    d_s[i] = expf(cur.g);
    k_s[i] = wkv_load(cur.k);
    a_s[i] = wkv_load(cur.a);
    b_s[i] = wkv_load(cur.b);
    const float vi = wkv_load(cur.v);
    __syncthreads();
    if (t + 1 < T) next = fetch(t + 1);

    float sa = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) sa = fmaf(S[j], a_s[j], sa);
    float yi = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      S[j] = fmaf(S[j], d_s[j], fmaf(sa, b_s[j], vi * k_s[j]));
      yi = fmaf(S[j], r_s[j], yi);
    }
    const int64_t o = offset(t);
    wkv_store(y + o, yi);
    if (sa_out != nullptr) sa_out[o] = sa;
    if (ckpt != nullptr && (t + 1) % WKV_CHUNK == 0) {
      float4* p = reinterpret_cast<float4*>(ckpt + (bh * (T / WKV_CHUNK) + t / WKV_CHUNK) * N * N + (int64_t)i * N);
#pragma unroll
      for (int q = 0; q < N / 4; q++) p[q] = make_float4(S[4 * q], S[4 * q + 1], S[4 * q + 2], S[4 * q + 3]);
    }
  }
  float4* p = reinterpret_cast<float4*>(sT + bh * N * N + (int64_t)i * N);
#pragma unroll
  for (int q = 0; q < N / 4; q++) p[q] = make_float4(S[4 * q], S[4 * q + 1], S[4 * q + 2], S[4 * q + 3]);
}

// Thread c holds column c of S (Sc[i] = S[i][c]) and both row c and column c of dS = dL/dS_t, so that
// every sum over i or over j is a loop inside one thread; only the vectors of step t go through shared
// memory. The two dS copies are updated with identical fmaf calls and stay bit-equal.
__global__ void __launch_bounds__(WKV_N) wkv7_backward_kernel(
    int T, int H, const wkv_io_t* __restrict__ r, const float* __restrict__ g, const wkv_io_t* __restrict__ k,
    const wkv_io_t* __restrict__ v, const wkv_io_t* __restrict__ a, const wkv_io_t* __restrict__ b,
    const wkv_io_t* __restrict__ dy, const float* __restrict__ dsT, const float* __restrict__ ckpt,
    const float* __restrict__ sa, wkv_io_t* __restrict__ dr, float* __restrict__ dg, wkv_io_t* __restrict__ dk,
    wkv_io_t* __restrict__ dv, wkv_io_t* __restrict__ da, wkv_io_t* __restrict__ db, float* __restrict__ ds0) {
  const int h = blockIdx.x, bb = blockIdx.y, c = threadIdx.x;
  const int64_t bh = (int64_t)bb * H + h;
  const auto offset = [&](int t) { return (((int64_t)bb * T + t) * H + h) * N + c; };
  const auto fetch = [&](int t) {
    const int64_t o = offset(t);
    return BackwardStep{r[o], k[o], a[o], b[o], v[o], dy[o], g[o], sa[o]};
  };

  __shared__ __align__(16) float r_s[N], d_s[N], k_s[N], a_s[N], b_s[N], v_s[N], sa_s[N], dy_s[N], dsa_s[N];

  float Sc[N], dSr[N], dSc[N];
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

  BackwardStep next = fetch(T - 1);
  for (int t = T - 1; t >= 0; t--) {
    if ((t + 1) % WKV_CHUNK == 0) {
      const float* p = ckpt + (bh * (T / WKV_CHUNK) + t / WKV_CHUNK) * N * N + c;
#pragma unroll
      for (int i = 0; i < N; i++) Sc[i] = p[(int64_t)i * N];
    }
    const BackwardStep cur = next;
    const float rc = wkv_load(cur.r), dc = expf(cur.g), kc = wkv_load(cur.k);
    const float ac = wkv_load(cur.a), bc = wkv_load(cur.b), vc = wkv_load(cur.v), dyc = wkv_load(cur.dy);
    __syncthreads();
    r_s[c] = rc; d_s[c] = dc; k_s[c] = kc; a_s[c] = ac; b_s[c] = bc; v_s[c] = vc;
    sa_s[c] = cur.sa;
    dy_s[c] = dyc;
    __syncthreads();
    if (t > 0) next = fetch(t - 1);

    // Row c of dS (c is a value index): dv, dsa = dS b, and the row of dS_{t-1} = dS D + dsa a^T.
    float dv_c = 0.f, dsa_c = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      dSr[j] = fmaf(dyc, r_s[j], dSr[j]);
      dv_c = fmaf(dSr[j], k_s[j], dv_c);
      dsa_c = fmaf(dSr[j], b_s[j], dsa_c);
    }
    dsa_s[c] = dsa_c;
#pragma unroll
    for (int j = 0; j < N; j++) dSr[j] = fmaf(dSr[j], d_s[j], dsa_c * a_s[j]);

    // Column c of S and dS (c is a key index): dr, dk, db, dg, then step S back to S_{t-1}.
    float dr_c = 0.f, dk_c = 0.f, db_c = 0.f, dg_c = 0.f;
    const float inv_d = 1.f / dc;
#pragma unroll
    for (int i = 0; i < N; i++) {
      dSc[i] = fmaf(dy_s[i], rc, dSc[i]);
      dr_c = fmaf(Sc[i], dy_s[i], dr_c);
      dk_c = fmaf(dSc[i], v_s[i], dk_c);
      db_c = fmaf(dSc[i], sa_s[i], db_c);
      const float decayed = Sc[i] - fmaf(sa_s[i], bc, v_s[i] * kc);  // = d_c * S_{t-1}[i][c]
      dg_c = fmaf(dSc[i], decayed, dg_c);                           // dL/dg = d * sum_i dS * S_{t-1}
      Sc[i] = decayed * inv_d;
    }
    __syncthreads();  // dsa_s complete
    float da_c = 0.f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      da_c = fmaf(Sc[i], dsa_s[i], da_c);
      dSc[i] = fmaf(dSc[i], dc, dsa_s[i] * ac);
    }

    const int64_t o = offset(t);
    wkv_store(dr + o, dr_c);
    dg[o] = dg_c;
    wkv_store(dk + o, dk_c);
    wkv_store(dv + o, dv_c);
    wkv_store(da + o, da_c);
    wkv_store(db + o, db_c);
  }
  if (ds0 != nullptr) {
#pragma unroll
    for (int i = 0; i < N; i++) ds0[bh * N * N + (int64_t)i * N + c] = dSc[i];
  }
}

}  // namespace wkv7_impl
