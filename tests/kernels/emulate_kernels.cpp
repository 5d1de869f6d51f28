// Runs the CUDA kernels of kernels/*_kernels.cuh on the CPU, for tests on machines without a GPU:
// one std::thread per GPU thread, a std::barrier for __syncthreads, and function-static arrays for
// __shared__ (blocks run one after another). Built by tests/kernels/test_emulated.py with g++.
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <thread>
#include <vector>

static thread_local uint3 threadIdx;
static uint3 blockIdx;
static std::barrier<>* g_barrier = nullptr;

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)
#define __syncthreads() g_barrier->arrive_and_wait()

#include "wkv6_kernels.cuh"
#include "wkv7_kernels.cuh"

template <class F>
static void emulate_launch(int grid_x, int grid_y, int threads, F&& body) {
  for (int y = 0; y < grid_y; y++) {
    for (int x = 0; x < grid_x; x++) {
      blockIdx = make_uint3(x, y, 0);
      std::barrier<> barrier(threads);
      g_barrier = &barrier;
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; t++) {
        pool.emplace_back([&body, t] {
          threadIdx = make_uint3(t, 0, 0);
          body();
        });
      }
      for (auto& th : pool) th.join();
    }
  }
}

#define IO(p) reinterpret_cast<const wkv_io_t*>(p)
#define IO_MUT(p) reinterpret_cast<wkv_io_t*>(p)

extern "C" {

int emulate_head_size() { return WKV_N; }
int emulate_io_bytes() { return sizeof(wkv_io_t); }

void emulate_wkv7_forward(int B, int T, int H, const void* r, const float* g, const void* k, const void* v,
                          const void* a, const void* b, const float* s0, void* y, float* sT, float* ckpt,
                          float* sa) {
  emulate_launch(H, B, WKV_N, [&] {
    wkv7_impl::wkv7_forward_kernel(T, H, IO(r), g, IO(k), IO(v), IO(a), IO(b), s0, IO_MUT(y), sT, ckpt, sa);
  });
}

void emulate_wkv7_backward(int B, int T, int H, const void* r, const float* g, const void* k, const void* v,
                           const void* a, const void* b, const void* dy, const float* dsT, const float* ckpt,
                           const float* sa, void* dr, float* dg, void* dk, void* dv, void* da, void* db, float* ds0) {
  emulate_launch(H, B, WKV_N, [&] {
    wkv7_impl::wkv7_backward_kernel(T, H, IO(r), g, IO(k), IO(v), IO(a), IO(b), IO(dy), dsT, ckpt, sa, IO_MUT(dr), dg,
                                    IO_MUT(dk), IO_MUT(dv), IO_MUT(da), IO_MUT(db), ds0);
  });
}

void emulate_wkv6_forward(int B, int T, int H, const void* r, const float* g, const void* k, const void* v,
                          const float* u, const float* s0, void* y, float* sT) {
  emulate_launch(H, B, WKV_N, [&] {
    wkv6_impl::wkv6_forward_kernel(T, H, IO(r), g, IO(k), IO(v), u, s0, IO_MUT(y), sT);
  });
}

void emulate_wkv6_backward(int B, int T, int H, const void* r, const float* g, const void* k, const void* v,
                           const float* u, const float* s0, const void* dy, const float* dsT, void* dr, float* dg,
                           void* dk, void* dv, float* du, float* ds0) {
  emulate_launch(H, B, WKV_N, [&] {
    wkv6_impl::wkv6_backward_kernel(T, H, IO(r), g, IO(k), IO(v), u, s0, IO(dy), dsT, IO_MUT(dr), dg, IO_MUT(dk),
                                    IO_MUT(dv), du, ds0);
  });
}

}  // extern "C"
