"""The training loop: one plain PyTorch loop for every method, version and engine.

    setup:  load model (mmap) → quantize → apply the PEFT method → batches → AdamW over trainable params
    step:   micro-batches (× accumulate) → loss (chunked CE + L2Wrap) → clip → optimizer step → event
    saves:  every epoch_save epochs (and save_every_steps), on Ctrl-C/SIGTERM, on a `save` control word
The trainer talks to the outside world only through the run directory (`rwkv_tune.runs`).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rwkv_tune import __version__
from rwkv_tune.errors import ConfigError, ResourceError
from rwkv_tune.preset import Preset, check_against_spec, check_machine, dump
from rwkv_tune.runs import EventWriter, RunDir
from rwkv_tune.train import methods
from rwkv_tune.train.checkpointing import (
    load_trainer_state,
    restore_optimizer,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stage_engine_shards,
)
from rwkv_tune.train.control import ControlFile
from rwkv_tune.train.device import memory_stats, optimizer_groups, pick_device, seed_everything
from rwkv_tune.train.distributed import adapter_parameters, devices_label, gathered, pad_to_length
from rwkv_tune.train.evaluation import evaluate, samples
from rwkv_tune.train.export import export_checkpoint
from rwkv_tune.train.losses import sequence_loss
from rwkv_tune.train.objective_steps import build_for_trainer, evaluate_objective, objective_micro_steps
from rwkv_tune.train.plan import out_of_memory_error, run_plan
from rwkv_tune.train.sample_prompts import default_prompts
from rwkv_tune.train.schedules import learning_rate
from rwkv_tune.train.wkv_op import settle_op

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32}


@dataclass
class TrainResult:
    step: int
    reason: str  # finished | stopped | interrupted | diverged
    adapter: Path | None
    losses: list[float]


class Trainer:
    """Owns one run: model, method, data, optimizer, and the event stream (rank 0)."""

    def __init__(self, preset: Preset, *, resume: str | None = None, rank: int = 0, world_size: int = 1,
                 echo: Any = None, engine: Any = None):
        self.preset = preset
        self.run = RunDir(Path(preset.output.dir))
        self.rank, self.world_size = rank, world_size
        self.resume = resume
        self.engine = engine
        if rank == 0:
            from rwkv_tune.train.loggers import fan_out, trackers

            echo = fan_out(echo, *trackers(preset, self.run.root))
        self.events = EventWriter(self.run.metrics, echo=echo) if rank == 0 else None
        self.stop_reason: str | None = None
        self.losses: list[float] = []
        self.saved_step = -1
        self.resumed_from: int | None = None
        self.resume_warnings: list[str] = []
        self.control = ControlFile(self.run.control, rank=rank, world_size=world_size, engine=engine)
        self.run_id, self.claim_warnings = "", []  # set by train.run from its claim on the run directory

    # ----------------------------------------------------------------- setup
    def emit(self, event: str, **payload: Any) -> None:
        if self.events is not None:
            self.events.emit(event, **payload)

    def setup(self) -> None:
        from rwkv_tune.data import make_batches
        from rwkv_tune.data.targets import check_targets
        from rwkv_tune.model import load_model

        p = self.preset
        check_machine(p)
        self.device = pick_device(p) if self.engine is None else self.engine.device
        seed_everything(p.train.seed)
        if p.train.precision == "tf32" and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        weights_dtype = DTYPES[p.train.precision] if self.device.type == "cuda" else torch.float32
        if self.device.type == "cpu" and p.train.precision in ("bf16", "fp16"):
            weights_dtype = DTYPES[p.train.precision]
        self.model = load_model(p.model.path, op=p.train.op, dtype=weights_dtype, device=self.device)
        self.spec = self.model.spec
        check_against_spec(p, self.spec)
        self.setup_warnings = [w for w in [settle_op(self.model, p.train.op, self.device, weights_dtype)] if w]
        self.model.grad_cp = p.train.grad_cp
        self.method = methods.apply(self.model, p)
        for param in self.model.parameters():  # trainable weights live in fp32 (master weights)
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
        self.trainable = [q for q in self.model.parameters() if q.requires_grad]
        if not self.trainable:
            raise ConfigError(f"method {p.method.name} left no trainable parameters", "Check method.targets/layers.")
        # dpo/orpo/grpo: the objective (built before _restore: its reference is the start) and its batches
        self.objective, objective_batches = build_for_trainer(self)
        self.batches = objective_batches or make_batches(
            p.data.path, mode=p.data.dataload, ctx_len=p.data.ctx_len, micro_bsz=p.train.micro_bsz,
            loss_mask=p.data.loss_mask, seed=p.train.seed, rank=self.rank, world_size=self.world_size,
            vocab_size=self.spec.vocab_size, type=None if p.data.type == "auto" else p.data.type,
            fields=p.data.fields, split=p.data.split,
        )
        check_targets(self.batches)
        checkpoint = self._resume_checkpoint() if self.resume else None
        if checkpoint is not None:  # before the optimizer exists: its (ZeRO fp32 master) copies start from these
            methods.load(self.model, self.preset, checkpoint / "adapter.safetensors")
        groups = optimizer_groups(self.model, p.train.weight_decay)
        if self.engine is not None:
            self.optimizer = self.engine.wrap(self.model, groups, p)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=p.train.lr_init, betas=(p.train.beta1, p.train.beta2),
                                               eps=p.train.adam_eps, fused=self.device.type == "cuda")
        self.step = 0
        self.skipped = 0
        self.bad_in_row = 0
        self.elapsed_before = 0.0
        self.tokens_seen = 0
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            seed_everything(p.train.seed)

    def _resume_checkpoint(self) -> Path | None:
        checkpoint = resume_checkpoint(self.run, self.resume or "")
        if checkpoint is None:
            self.emit("warning", message="--resume auto: no checkpoint yet, starting from scratch")
        return checkpoint

    def _restore(self, checkpoint: Path) -> None:
        state = load_trainer_state(checkpoint)
        names = {id(q): n for n, q in self.model.named_parameters()}
        order = [names[id(q)] for g in optimizer_groups(self.model, self.preset.train.weight_decay) for q in g["params"]]
        warning = restore_optimizer(checkpoint, state, self.optimizer, self.engine, self.world_size, self.model, order)
        if warning:
            self.resume_warnings.append(warning)  # shown after run_start, with this session's events
        data = state["data"]
        self.batches.load_state_dict(data[min(self.rank, len(data) - 1)] if isinstance(data, list) else data)
        self.step, self.skipped = state["step"], state["skipped"]
        self.elapsed_before, self.tokens_seen = state["elapsed_s"], state["tokens"]
        self.losses = list(state.get("losses", []))
        self.saved_step = self.step
        set_rng_state(state["rng"][min(self.rank, len(state["rng"]) - 1)] if isinstance(state["rng"], list)
                      else state["rng"])
        self.resumed_from = self.step

    # ----------------------------------------------------------------- plan / provenance
    def plan(self) -> dict[str, Any]:
        from rwkv_tune.peft import trainable_summary

        return run_plan(self.preset, total_params=trainable_summary(self.model)["total"],
                        trainable_params=sum(q.numel() for q in self.trainable),
                        data_tokens=getattr(self.batches, "total_tokens", None), device=str(self.device),
                        world_size=self.world_size)

    def write_resolved_preset(self) -> None:
        from rwkv_tune.checkpoint import fingerprint

        p = self.preset
        p.model.spec = {k: v for k, v in self.spec.to_dict().items() if k not in ("params", "size_name")}
        p.provenance = {"tool": f"rwkv-tune {__version__}", "base_model": fingerprint(p.model.path),
                        "data": fingerprint(p.data.path) if p.data.path else None, "source": p.source}
        self.run.root.mkdir(parents=True, exist_ok=True)
        from rwkv_tune.checkpoint import atomic_path

        with atomic_path(self.run.preset) as tmp:
            tmp.write_text(dump(p), encoding="utf-8")

    # ----------------------------------------------------------------- the loop
    def _lr(self) -> float:
        t = self.preset.train
        return learning_rate(self.step, total_steps=self.preset.total_steps, lr_init=t.lr_init, lr_final=t.lr_final,
                             schedule=t.lr_schedule, warmup_steps=t.warmup_steps)

    def _autocast(self) -> torch.autocast:
        p = self.preset
        enabled = p.train.precision == "bf16" or (self.device.type == "cuda" and p.train.precision == "fp16")
        return torch.autocast(self.device.type, dtype=DTYPES[p.train.precision], enabled=enabled)

    def _micro_step(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> tuple[float, int]:
        """Forward+backward of one micro-batch; returns (loss sum, target count)."""
        p = self.preset
        with self._autocast():
            return sequence_loss(self.model, x.to(self.device), y.to(self.device), scale=scale,
                                 chunk_ctx=p.train.chunk_ctx if p.train.train_type == "infctx" else None,
                                 l2wrap=p.train.l2wrap, backward=self.engine.backward if self.engine else None)

    def train_step(self) -> dict[str, Any] | None:
        p = self.preset
        lr = self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        if self.objective is not None:
            loss, tokens, fields = objective_micro_steps(self, self._autocast)
        else:
            out = self._sft_micro_steps()
            if out is None:
                return None
            (loss, tokens), fields = out, {}
        if not math.isfinite(loss):
            if self.engine is not None:
                self.engine.skip(self.optimizer)
            else:
                self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.bad_in_row += 1
            self.emit("warning", message=f"step {self.step + 1}: loss is {loss}; step skipped "
                      f"({self.bad_in_row} in a row, limit {p.train.max_bad_steps})")
            if self.bad_in_row >= p.train.max_bad_steps:
                self.stop_reason = "diverged"
            return None
        self.bad_in_row = 0
        if self.engine is not None:
            grad_norm = self.engine.step(self.optimizer, p.train.grad_clip)
        else:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, p.train.grad_clip or float("inf")))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += tokens
        self.losses.append(loss)
        return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "fields": fields}

    def _sft_micro_steps(self) -> tuple[float, int] | None:
        """Next-token loss over `accumulate` micro-batches (backward done); (mean loss, tokens) or None if empty."""
        real_before = getattr(self.batches, "real_tokens", None)
        micro = [next(self.batches) for _ in range(self.preset.train.accumulate_grad_batches)]
        count = sum(int((y != -100).sum()) for _, y in micro)
        distributed = self.world_size > 1 and self.engine is not None
        if distributed:  # ranks average their gradients, so scale by world/global count: the exact global mean
            count = int(self.engine.sum(count))
        if count == 0:
            return None
        loss_sum = 0.0
        for x, y in micro:
            if self.engine is not None and self.preset.train.train_type == "infctx":  # same chunk count on every rank
                x, y = pad_to_length(x, y, self.preset.data.ctx_len)
            s, _ = self._micro_step(x, y, scale=(self.world_size if distributed else 1) / count)
            loss_sum += s
        loss = (self.engine.sum(loss_sum) if distributed else loss_sum) / count
        if real_before is None:  # a batch source that does not count its padding
            return loss, sum(int(x.numel()) for x, _ in micro) * self.world_size
        real = self.batches.real_tokens - real_before  # not the padding to ctx_len or to a multiple of 16
        return loss, real * self.world_size

    def _checkpoint(self) -> Path:
        """Every rank takes part (DeepSpeed shards, ZeRO-3 gathering); rank 0 writes and renames the folder."""
        engine = self.engine
        trainer_state = {
            "optimizer": engine.optimizer_state(self.optimizer) if engine else self.optimizer.state_dict(),
            "data": engine.gather(self.batches.state_dict()) if engine else self.batches.state_dict(),
            "step": self.step, "skipped": self.skipped,
            "elapsed_s": self.elapsed_before + (time.time() - self.started), "tokens": self.tokens_seen,
            "rng": engine.gather(rng_state()) if engine else rng_state(),
            "losses": self.losses, "version": __version__, "world_size": self.world_size, "run_id": self.run_id,
        }
        self.saved_step = self.step
        staged = stage_engine_shards(self.run, self.step, engine, self.rank)
        with gathered(adapter_parameters(self.model), engine):
            adapter = methods.adapter(self.model) if self.rank == 0 else None
        if self.rank != 0:
            return self.run.checkpoint(self.step)
        path = save_checkpoint(self.run, self.step, lambda out: methods.save(adapter, self.preset, out),
                               trainer_state, keep_last=self.preset.train.keep_last, staged=staged)  # disk full: exit 3
        epoch = self.step // self.preset.train.epoch_steps
        export_checkpoint(self.preset, path, self.step, self.run.root)
        self.emit("checkpoint", step=self.step, epoch=epoch, path=str(path))
        return path

    def fit(self) -> TrainResult:
        p = self.preset
        self.started = time.time()
        self.control.clear()
        if self.rank == 0:
            self.write_resolved_preset()
        self.emit("run_start", run=str(self.run.root), preset=p.to_dict(), plan=self.plan(), spec=self.spec.to_dict(),
                  resumed_from_step=self.resumed_from, tool=__version__, run_id=self.run_id,
                  devices=devices_label(self.device, self.world_size, p.train.strategy))
        for w in [*self.claim_warnings, *self.setup_warnings, *self.resume_warnings,
                  *getattr(self.batches, "warnings", lambda: [])()]:
            self.emit("warning", message=str(w))
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: Any) -> None:
            self.stop_reason = "interrupted"  # the CLI tells SIGTERM (143) from SIGINT (130) by its signal log

        for sig in previous:
            signal.signal(sig, on_signal)
        window: list[tuple[float, int]] = []
        try:
            while self.step < p.total_steps and self.stop_reason is None:
                t0 = time.time()
                try:
                    out = self.train_step()
                except torch.OutOfMemoryError:
                    raise self._out_of_memory() from None
                if out is None:
                    self._poll_control()  # also when a batch is skipped: stop works whatever happens
                    continue
                window = (window + [(time.time() - t0, out["tokens"])])[-20:]
                tokens_per_s = sum(n for _, n in window) / max(1e-9, sum(d for d, _ in window))
                epoch = (self.step - 1) // p.train.epoch_steps
                self.emit("step", step=self.step, epoch=epoch, loss=out["loss"], lr=out["lr"],
                          tokens=self.tokens_seen, tokens_per_s=tokens_per_s,
                          elapsed_s=self.elapsed_before + time.time() - self.started,
                          grad_norm=out["grad_norm"], mem=memory_stats(self.device), skipped=self.skipped,
                          **out["fields"])
                end_of_epoch = self.step % p.train.epoch_steps == 0
                if (end_of_epoch and (self.step // p.train.epoch_steps) % p.train.epoch_save == 0) or (
                        p.train.save_every_steps and self.step % p.train.save_every_steps == 0):
                    self._checkpoint()
                self._guard_memory(self._maybe_eval, "during eval")
                self._guard_memory(self._maybe_sample, "while sampling")
                self._poll_control()
            reason = self.stop_reason or "finished"
            if reason != "diverged" and self.saved_step != self.step:
                self._checkpoint()
            if reason == "diverged":
                self.emit("error", kind="diverged", message=f"{p.train.max_bad_steps} NaN/inf losses in a row; "
                          "stopped. The last good checkpoint is kept. Lower train.lr_init or check the data.")
            return TrainResult(self.step, reason, self.run.adapter if self.run.adapter.exists() else None, self.losses)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _poll_control(self) -> None:
        """The control file's word (rank 0 reads, every rank acts), and a signal that reached any rank."""
        if self.control.poll(emit=self.emit, save=self._checkpoint, stopping=lambda: self.stop_reason is not None):
            self.stop_reason = "stopped"
        if self.control.any_rank(self.stop_reason == "interrupted") and self.stop_reason is None:
            self.stop_reason = "interrupted"

    def _guard_memory(self, check: Any, during: str) -> None:
        """Eval and sampling forwards get the training step's out-of-memory error and advice."""
        try:
            check()
        except torch.OutOfMemoryError:
            raise self._out_of_memory(f"{during} after step {self.step}") from None

    def _out_of_memory(self, during: str | None = None) -> ResourceError:
        self.optimizer.zero_grad(set_to_none=True)
        return out_of_memory_error(self.preset, self.spec, during or f"at step {self.step + 1}",
                                   kept="nothing was written" if during is None else
                                   "the checkpoints saved so far are kept")

    def _maybe_eval(self) -> None:
        d = self.preset.data
        if not d.eval_path or not d.eval_every or self.step % d.eval_every:
            return
        if self.objective is not None:  # dpo/orpo: loss, pref_accuracy, margins on the held-out pairs
            fields = evaluate_objective(self)
            return self.emit("eval", step=self.step, **fields) if fields else None
        loss = evaluate(self.model, d.eval_path, self.preset, self.device, batches=d.eval_batches)
        self.emit("eval", step=self.step, loss=loss, ppl=math.exp(min(loss, 50)))

    def _maybe_sample(self) -> None:
        t = self.preset.train
        if not t.sample_every or self.step % t.sample_every:
            return  # every rank generates (ZeRO-3 forwards are collective; the prompts are the same); rank 0 reports
        prompts = t.sample_prompts or default_prompts(self.batches)  # sample_every alone: prompts from the data
        for prompt, text in samples(self.model, prompts, max_tokens=t.sample_tokens, seed=self.step):
            if text is None:
                self.emit("warning", message=f"sample prompt {prompt!r} has tokens beyond the model's vocab "
                          f"({self.spec.vocab_size}); skipped")
            else:
                self.emit("sample", step=self.step, prompt=prompt, text=text)
