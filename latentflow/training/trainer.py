"""The one-process training loop shared by stage 1 (autoencoders) and stage 2 (priors).

What is trained is a *task* (:class:`~latentflow.training.tasks.AutoencoderTask`,
:class:`~latentflow.training.tasks.PriorTask`): it owns the model and computes the
losses. The trainer owns the machinery: AdamW, warmup/cosine LR, bf16 autocast,
gradient clipping, EMA, a per-step JSON log, checkpoints and exact resume. Under
``torch.distributed`` (Ray Train) the model is wrapped in DDP and extra modules'
gradients are all-reduced; only rank 0 writes files.

Example::

    trainer = Trainer(task, stream, cfg.optim, cfg.train)
    history = trainer.fit()          # list of per-step log dicts
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Callable

import fsspec
import torch
import torch.distributed as dist
from torch import nn

from latentflow.progress import Progress
from latentflow.training import checkpoint as ckpt
from latentflow.training.config import OptimConfig, RunSection
from latentflow.training.ema import EMA
from latentflow.training.schedule import set_lr, warmup_cosine

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def sync_grads(module: nn.Module) -> None:
    """Average gradients of a module that is not wrapped in DDP across workers."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def pick_device(use_gpu: bool) -> torch.device:
    """CUDA when asked for and present (the worker's own GPU under Ray Train), else CPU."""
    if not (use_gpu and torch.cuda.is_available()):
        return torch.device("cpu")
    if is_distributed():
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda")


def _scalar(value: Any) -> Any:
    return float(value.detach().float()) if torch.is_tensor(value) else value


def batch_rows(batch: dict[str, Any]) -> int:
    """Samples in a batch (priors: ``latents``; autoencoders: ``pixel_values``)."""
    for key in ("latents", "pixel_values"):
        if batch.get(key) is not None:
            return len(batch[key])
    return 0


class Trainer:
    """Step-based trainer.

    Args:
        task: object with ``model`` (saved with ``save_pretrained``), ``extra_modules()``
            (dict of other trainable generator-side modules), ``loss(batch, step) -> (loss, logs)``,
            and optionally ``discriminator`` + ``discriminator_loss(step) -> (loss, logs) | None``
            and ``evaluate(model) -> dict``.
        stream: batches with ``next_batch()``, ``position()``, ``set_position(dict)``.
        optim: optimizer / schedule / EMA settings.
        run: steps, precision, cadence, output folder.
        storage_options: fsspec options for ``run.output_dir``.
        on_log: called with each step's log dict (Ray Train reports through it).
    """

    def __init__(self, task: Any, stream: Any, optim: OptimConfig, run: RunSection,
                 storage_options: dict | None = None, on_log: Callable[[dict], None] | None = None,
                 device: torch.device | str = "cpu"):
        self.task, self.stream, self.optim_cfg, self.run = task, stream, optim, run
        self.storage_options = storage_options or {}
        self.on_log = on_log
        self.device = torch.device(device)
        self.step = 0
        self.last_batch_rows = 0  # samples in the last step's batch (progress)
        self.history: list[dict[str, Any]] = []
        self.model: nn.Module = task.model.to(self.device)
        if hasattr(task, "to"):  # frozen helper networks (perceptual, VF feature model)
            task.to(self.device)
        self.extras = nn.ModuleDict(task.extra_modules()).to(self.device)
        self.optimizers = {"model": self._adamw(list(self.model.parameters()) + list(self.extras.parameters()), optim.lr)}
        self.discriminator = getattr(task, "discriminator", None)
        if self.discriminator is not None:
            self.discriminator.to(self.device)
            self.optimizers["discriminator"] = self._adamw(self.discriminator.parameters(), task.disc_lr)
        if is_distributed():
            # the prior task wraps its loss in a module (DDP syncs through forward); autoencoders wrap the model.
            # DDP broadcasts rank 0's weights here, so the EMA below starts from the shared weights.
            target = getattr(task, "ddp_module", self.model)
            task.net = torch.nn.parallel.DistributedDataParallel(target)
            for module in (self.extras, self.discriminator):
                if module is not None:
                    for t in module.state_dict().values():
                        dist.broadcast(t, 0)
        self.ema = EMA(self.model, optim.ema_decay) if optim.ema_decay > 0 else None
        self.fs, self.out = fsspec.url_to_fs(run.output_dir, **self.storage_options)

    def _adamw(self, params, lr: float) -> torch.optim.Optimizer:
        o = self.optim_cfg
        return torch.optim.AdamW(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay, foreach=False)

    def autocast(self):
        if self.run.mixed_precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---- one step ------------------------------------------------------------------
    def _lr(self) -> float:
        o = self.optim_cfg
        return warmup_cosine(self.step, o.lr, o.warmup_steps, self.run.max_steps, o.min_lr_ratio)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (plus a discriminator step when the task has one)."""
        start = time.perf_counter()
        batch = self.stream.next_batch()
        self.last_batch_rows = batch_rows(batch)
        lr = self._lr()
        opt = self.optimizers["model"]
        set_lr(opt, lr)
        self.model.train()
        with self.autocast():
            loss, logs = self.task.loss(batch, self.step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync_grads(self.extras)
        params = list(self.model.parameters()) + list(self.extras.parameters())
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.optim_cfg.grad_clip)
        opt.step()
        logs.update(self._discriminator_step())
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        logs = {k: _scalar(v) for k, v in logs.items()}
        logs.update(step=self.step, loss=_scalar(loss), lr=lr, grad_norm=_scalar(grad_norm),
                    step_time=time.perf_counter() - start)
        return logs

    def _discriminator_step(self) -> dict[str, Any]:
        if self.discriminator is None:
            return {}
        with self.autocast():
            result = self.task.discriminator_loss(self.step)
        if result is None:
            return {}
        d_loss, logs = result
        opt = self.optimizers["discriminator"]
        opt.zero_grad(set_to_none=True)
        d_loss.backward()
        sync_grads(self.discriminator)
        torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), self.optim_cfg.grad_clip)
        opt.step()
        return logs

    # ---- the loop ---------------------------------------------------------------------
    def fit(self, until: int | None = None) -> list[dict[str, Any]]:
        """Train to ``run.max_steps`` (resuming first when asked). Returns this call's step logs.

        Args:
            until: stop (with a checkpoint) after this step, as a preempted job would; the
                schedule still spans ``max_steps``.
        """
        if self.run.resume:
            self.maybe_resume()
        stop = self.run.max_steps if until is None else min(until, self.run.max_steps)
        desc = "train" if not is_distributed() else f"train (worker 0 of {dist.get_world_size()}, its samples)"
        # rank 0 reports: steps with ETA, and the samples they took (partial batches count what they hold)
        progress = Progress(stop, desc, unit="step", initial=self.step, mode=None if rank() == 0 else "off")
        while self.step < stop:
            logs = self.train_step()
            if self.run.eval_every and self.step % self.run.eval_every == 0 and hasattr(self.task, "evaluate"):
                logs.update({f"eval/{k}": v for k, v in self.task.evaluate(self.eval_model()).items()})
            self._log(logs)
            if self.step % self.run.checkpoint_every == 0 or self.step in (stop, self.run.max_steps):
                self.save_checkpoint()
            progress.update(1, samples=self.last_batch_rows, loss=logs["loss"])
        progress.close()
        return self.history

    def eval_model(self) -> nn.Module:
        """The EMA weights in a copy of the model (the model itself when EMA is off)."""
        if self.ema is None:
            return self.model
        import copy

        model = copy.deepcopy(self.model)
        self.ema.copy_to(model)
        return model.eval()

    def _log(self, logs: dict[str, Any]) -> None:
        self.history.append(logs)
        if self.on_log is not None:
            self.on_log(logs)
        if rank() != 0:
            return
        self.fs.makedirs(self.out, exist_ok=True)
        with self.fs.open(f"{self.out}/log.jsonl", "a") as f:
            f.write(json.dumps(logs, sort_keys=True) + "\n")
        if self.step % self.run.log_every == 0 or self.step == self.run.max_steps:
            shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()}
            print(json.dumps(shown), flush=True)

    # ---- checkpoints -------------------------------------------------------------------
    def _save_worker_state(self, path: str) -> None:
        """Every worker's own RNG and data position (``worker-<rank>.*``): each reads its own shards."""
        self.fs.makedirs(path, exist_ok=True)
        rng_tensors, rng_meta = ckpt.rng_state()
        ckpt.write_tensors(self.fs, f"{path}/worker-{rank()}.rng.safetensors", rng_tensors)
        ckpt.write_json(self.fs, f"{path}/worker-{rank()}.json", {"rng": rng_meta, "data_position": self.stream.position()})

    def save_checkpoint(self) -> str | None:
        """Write the checkpoint for the current step. Returns its folder (rank 0; None elsewhere).

        Under ``torch.distributed`` every worker first writes its RNG and data position;
        rank 0 writes the rest after a barrier, ``trainer_state.json`` last.
        """
        path = ckpt.checkpoint_dir(self.out, self.step)
        if is_distributed():
            self._save_worker_state(path)
            dist.barrier()
        if rank() != 0:
            return None
        fs = self.fs
        fs.makedirs(path, exist_ok=True)
        url = fs.unstrip_protocol(path) if "://" in self.run.output_dir else path
        self.model.save_pretrained(f"{url}/model", self.storage_options)
        if self.ema is not None:
            self.eval_model().save_pretrained(f"{url}/ema", self.storage_options)
        tensors, optim_meta = {}, {}
        for name, opt in self.optimizers.items():
            t, meta = ckpt.optimizer_to_tensors(name, opt)
            tensors.update(t)
            optim_meta[name] = meta
        ckpt.write_tensors(fs, f"{path}/optimizer.safetensors", tensors)
        ckpt.write_tensors(fs, f"{path}/modules.safetensors", self._module_state())
        rng_tensors, rng_meta = ckpt.rng_state()
        ckpt.write_tensors(fs, f"{path}/rng.safetensors", rng_tensors)
        if self.ema is not None:
            ckpt.write_tensors(fs, f"{path}/ema_shadow.safetensors", self.ema.state_dict())
        state = {"step": self.step, "optimizers": optim_meta, "rng": rng_meta,
                 "data_position": self.stream.position(),
                 "ema_updates": self.ema.num_updates if self.ema else 0,
                 "run": self.run.to_dict(), "optim": self.optim_cfg.to_dict()}
        ckpt.write_json(fs, f"{path}/{ckpt.STATE_NAME}", state)  # last: marks the checkpoint complete
        return url

    def _module_state(self) -> dict[str, torch.Tensor]:
        state = {f"extras.{k}": v for k, v in self.extras.state_dict().items()}
        if self.discriminator is not None:
            state.update({f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()})
        return state

    def maybe_resume(self) -> str | None:
        """Load the newest complete checkpoint in ``output_dir``, if any. Returns its folder."""
        path = ckpt.latest_checkpoint(self.run.output_dir, self.storage_options)
        if path is not None:
            self.load_checkpoint(path)
        return path

    def load_checkpoint(self, url: str) -> None:
        """Restore model, extras, optimizers, EMA, RNG and data position from a checkpoint folder."""
        fs, path = fsspec.url_to_fs(url, **self.storage_options)
        from latentflow import hub

        state_json = ckpt.read_json(fs, f"{path}/{ckpt.STATE_NAME}")
        weights, _ = hub.read_safetensors(fs, f"{path}/model/{hub.WEIGHTS_NAME}")
        self.model.load_state_dict(weights)
        modules = ckpt.read_tensors(fs, f"{path}/modules.safetensors")
        self.extras.load_state_dict({k[7:]: v for k, v in modules.items() if k.startswith("extras.")})
        if self.discriminator is not None:
            self.discriminator.load_state_dict({k[14:]: v for k, v in modules.items() if k.startswith("discriminator.")})
        tensors = ckpt.read_tensors(fs, f"{path}/optimizer.safetensors")
        for name, opt in self.optimizers.items():
            ckpt.optimizer_from_tensors(name, opt, tensors, state_json["optimizers"][name])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.read_tensors(fs, f"{path}/ema_shadow.safetensors"), state_json["ema_updates"])
        rng_meta, position = state_json["rng"], state_json["data_position"]
        rng_file = f"{path}/rng.safetensors"
        self.step = int(state_json["step"])
        if is_distributed():
            if not fs.exists(f"{path}/worker-{rank()}.json"):
                # written by fewer workers (a single-process run resumed with --num-workers N): weights, optimizer
                # and step carry over; this worker's data order and RNG start afresh from the seed
                logger.warning("checkpoint %s has no state for worker %d (written with fewer workers): model, optimizer "
                               "and step %d restored, this worker's data order starts afresh", url, rank(), self.step)
                return
            worker = ckpt.read_json(fs, f"{path}/worker-{rank()}.json")
            rng_meta, position, rng_file = worker["rng"], worker["data_position"], f"{path}/worker-{rank()}.rng.safetensors"
        ckpt.set_rng_state(ckpt.read_tensors(fs, rng_file), rng_meta)
        self.stream.set_position(position)
