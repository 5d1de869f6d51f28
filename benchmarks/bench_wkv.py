"""Forward+backward speed of the chunked WKV ops against the per-token loop, on this machine's CPU.

Run: python benchmarks/bench_wkv.py [--repeats 7] [--T 512]
Prints tokens/s (B*T per forward+backward) for v7 and v6, with the chunked/naive ratio; medians.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from rwkv_tune.model.wkv import wkv6, wkv7


def v7_inputs(B: int, T: int, H: int, N: int) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like RWKV-7's (reference/wkv-chunked.md §4 "How to test")."""
    g = -0.6065306597126334 * torch.sigmoid(2 * torch.randn(B, T, H, N))
    kappa = F.normalize(torch.randn(1, 1, H, N) + 0.5 * torch.randn(B, T, H, N), dim=-1)
    alpha = torch.sigmoid(torch.randn(B, T, H, N))
    r, k = torch.randn(B, T, H, N) / N**0.5, torch.randn(B, T, H, N) / N**0.5
    v = torch.randn(B, T, H, N)
    return r, g, k, v, -kappa, kappa * alpha, 0.1 * torch.randn(B, H, N, N)


def v6_inputs(B: int, T: int, H: int, N: int) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like RWKV-6's: g = -exp(w), w ~ N(-1, 1.5^2)."""
    g = -torch.exp(1.5 * torch.randn(B, T, H, N) - 1)
    r, k = torch.randn(B, T, H, N) / N**0.5, torch.randn(B, T, H, N) / N**0.5
    v = torch.randn(B, T, H, N)
    return r, g, k, v, 0.5 * torch.randn(H, N), 0.1 * torch.randn(B, H, N, N)


def time_fwd_bwd(fn, inputs: tuple[torch.Tensor, ...], repeats: int) -> float:
    """Median seconds of one forward+backward (loss touches y and the final state)."""
    inputs = [x.clone().requires_grad_() for x in inputs]
    times = []
    for _ in range(repeats + 1):  # first run is a warm-up
        t0 = time.perf_counter()
        y, s = fn(*inputs)
        (y.square().sum() + s.square().sum()).backward()
        times.append(time.perf_counter() - t0)
        for x in inputs:
            x.grad = None
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=2)
    parser.add_argument("--T", type=int, default=512)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    B, T, H, N = args.B, args.T, args.H, args.N
    torch.manual_seed(0)
    print(
        f"B={B} T={T} H={H} N={N}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"forward+backward, median of {args.repeats}"
    )
    print(f"{'':4} {'naive ms':>9} {'chunked ms':>11} {'naive tok/s':>12} {'chunked tok/s':>14} {'ratio':>6}")
    cases = [("v7", wkv7, v7_inputs(B, T, H, N)), ("v6", wkv6, v6_inputs(B, T, H, N))]
    for name, fn, inputs in cases:
        naive = time_fwd_bwd(lambda *x, fn=fn: fn(*x, op="naive"), inputs, args.repeats)
        chunked = time_fwd_bwd(lambda *x, fn=fn: fn(*x, op="torch"), inputs, args.repeats)
        print(
            f"{name:4} {naive * 1e3:9.1f} {chunked * 1e3:11.1f} {B * T / naive:12.0f} {B * T / chunked:14.0f} "
            f"{naive / chunked:5.1f}x"
        )


if __name__ == "__main__":
    main()
