"""The DeepSpeed engine: ZeRO stage 1/2/3 (+ CPU offload) for the same training loop.

The loop stays a plain loop; this object supplies the few calls that differ (optimizer creation,
backward, step, loss averaging across ranks). On a CPU machine DeepSpeed uses its CPU
accelerator with gloo, so `devices: 2` runs two CPU processes: that is how the tests run it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from rwkv_tune.preset import Preset


class DeepSpeedEngine:
    def __init__(self, preset: Preset, *, rank: int, world_size: int):
        import deepspeed

        self.preset = preset
        self.rank, self.world_size = rank, world_size
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")
        self.zero_stage = int(preset.train.strategy.split("_")[2])
        self.ds: Any = None
        self.backward_calls = 1
        self.calls = 0  # backward calls since the last optimizer step

    def config(self, p: Preset, backward_calls: int) -> dict[str, Any]:
        stage = self.zero_stage
        zero: dict[str, Any] = {"stage": stage}
        if p.train.strategy.endswith("offload"):
            zero["offload_optimizer"] = {"device": "cpu"}
            if stage == 3:
                zero["offload_param"] = {"device": "cpu"}
        if stage == 3:
            zero["stage3_param_persistence_threshold"] = p.train.zero3_persistence
        return {
            "train_micro_batch_size_per_gpu": p.train.micro_bsz,
            "gradient_accumulation_steps": backward_calls,
            "gradient_clipping": p.train.grad_clip,
            "zero_optimization": zero,
            "optimizer": {"type": "AdamW", "params": {"lr": p.train.lr_init, "betas": [p.train.beta1, p.train.beta2],
                                                      "eps": p.train.adam_eps, "weight_decay": p.train.weight_decay,
                                                      "torch_adam": self.device.type == "cpu"}},
            "bf16": {"enabled": p.train.precision == "bf16" and self.device.type == "cuda"},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }

    def wrap(self, model: torch.nn.Module, groups: list[dict[str, Any]], p: Preset) -> Any:
        import deepspeed

        chunks = p.data.ctx_len // p.train.chunk_ctx if p.train.train_type == "infctx" else 1
        self.backward_calls = p.train.accumulate_grad_batches * chunks
        self.ds, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups,
                                                        config=self.config(p, self.backward_calls))
        return optimizer

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of one micro-batch (or infctx chunk); the update waits for `step`, after the NaN check."""
        self.calls += 1
        boundary = self.calls == self.backward_calls
        self.ds.set_gradient_accumulation_boundary(boundary)  # the last call reduces the gradients
        self.ds.backward(loss, scale_wrt_gas=False)
        if not boundary:
            self.ds.step()  # counts the micro-step; no update off the boundary

    def step(self, optimizer: Any, grad_clip: float) -> float:
        """The optimizer update of a finished accumulation; returns the gradient norm."""
        self.ds.step()
        self.calls = 0
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def skip(self, optimizer: Any) -> None:
        """A step whose loss was NaN/inf: DeepSpeed's step sees the non-finite gradient norm, updates nothing and
        clears its (partitioned) gradient buffers, as it does for an fp16 overflow."""
        self.ds.step()
        self.calls = 0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def save_shards(self, folder: Any) -> None:
        """DeepSpeed's own checkpoint of this rank (fp32 master weights, AdamW moments); every rank calls it."""
        self.ds.save_checkpoint(str(folder), tag="state", client_state={"world_size": self.world_size},
                                save_latest=False, exclude_frozen_parameters=True)

    def load_shards(self, folder: Any) -> None:
        """Restore what `save_shards` wrote, by the same number of ranks: weights into ZeRO's fp32 masters, moments."""
        path, _ = self.ds.load_checkpoint(str(folder), tag="state", load_module_strict=False,
                                          load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {folder}")

    def sum(self, value: float) -> float:
        """The sum of a number over all ranks."""
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def broadcast(self, value: Any) -> Any:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def set_moments(self, model: torch.nn.Module, moments: dict[str, dict[str, torch.Tensor]], step: int) -> bool:
        """Put whole per-parameter AdamW moments (by name, e.g. from a one-process checkpoint) into ZeRO-1/2's
        partitions, each rank keeping its slice; False where this is not supported (ZeRO-3)."""
        if self.zero_stage not in (1, 2):
            return False
        from deepspeed.utils import safe_set_full_optimizer_state

        zero = self.ds.optimizer
        for flat in zero.single_partition_of_fp32_groups:  # AdamW creates its state lazily: create it here
            zero.optimizer.state[flat] = {"step": torch.tensor(float(step)), "exp_avg": torch.zeros_like(flat),
                                          "exp_avg_sq": torch.zeros_like(flat)}
        zero._lazy_init_hp_params_optimizer_state()
        for name, param in model.named_parameters():
            if param.requires_grad:
                for key in ("exp_avg", "exp_avg_sq"):
                    safe_set_full_optimizer_state(param, moments[name][key].reshape(param.shape).float(), key)
        return True

    def optimizer_state(self, optimizer: Any) -> Any:
        return None  # the ZeRO shards in the checkpoint's deepspeed/ folder hold it (save_shards)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    gather_rng = gather
