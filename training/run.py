"""What every training run shares: device, seeds, DDP, optimiser and schedule, checkpoint cadence, logging.

Runs go on CPU or CUDA (``--device``), single process or ``torchrun --nproc_per_node N`` (DDP: gloo on CPU,
nccl on CUDA). Each stage (``training.pretrain``, ``training.supervised``, ``training.kd``) calls
``start_run`` once and then uses the pieces below.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm import tqdm

DEVICES = ("cpu", "cuda", "auto")


@dataclass
class Dist:
    """Process-group facts (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available). Never hard-codes ``.cuda()``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use cpu or auto")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; accepted: {', '.join(DEVICES)}")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def end_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def main_process() -> bool:
    """Whether this is rank 0 of a torchrun launch (or a plain single process)."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def set_threads(threads: int) -> None:
    """``torch.set_num_threads`` when ``threads`` > 0 (0 leaves PyTorch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def start_run(
    out: str | Path,
    stage: str,
    config: dict[str, Any],
    device: str = "auto",
    seed: int = 0,
    threads: int = 0,
    resume: bool = False,
) -> tuple[Path, torch.device, Dist]:
    """Device, process group, threads and seeds; the run folder (stale logs removed unless resuming)
    with ``<stage>_config.yaml``. Returns (run folder, device, Dist)."""
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    d = init_distributed(dev)
    set_threads(threads)
    seed_everything(seed + d.rank)
    out = Path(out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in ("log.csv", "tensorboard"):
                p = out / stale
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        (out / f"{stage}_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    barrier(d)
    return out, dev, d


def cache_dir_for(out: Path) -> Path:
    """Feature/embedding caches live next to the run (``RUN_DIR/../cache``, shared by sibling runs)."""
    return Path(out).parent / "cache"


# ---------------------------------------------------------------------------------------------------
# optimisation
def make_optimizer(params: Iterable[nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    """AdamW with the stage's ``lr`` and ``weight_decay``."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch LR factor: linear warm-up, then cosine to 0, step decay, or constant."""

    def factor(epoch: int) -> float:
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        if cfg.schedule == "cosine":
            span = max(1, cfg.epochs - cfg.warmup_epochs)
            return 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
        if cfg.schedule == "step":
            return cfg.gamma ** (epoch // max(1, cfg.step_size))
        if cfg.schedule == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {cfg.schedule!r}; accepted: cosine, step, constant")

    factor(0)  # validate the schedule name now
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, net: nn.Module, grad_clip: float) -> None:
    """Backward, gradient-norm clipping when ``grad_clip > 0``, one optimiser step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()


def shard_batches(n: int, batch_size: int, seed: int, epoch: int, d: Dist) -> list[np.ndarray]:
    """The epoch's shuffled indices, this rank's equal share, cut into batches (same count on every rank)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = len(perm) // d.world
    mine = perm[d.rank * per_rank : (d.rank + 1) * per_rank] if d.world > 1 else perm
    bs = max(1, batch_size // d.world)
    return [mine[i : i + bs] for i in range(0, len(mine), bs)]


def distributed(model: nn.Module, d: Dist) -> nn.Module:
    """``model`` wrapped for DDP when there is more than one process."""
    return nn.parallel.DistributedDataParallel(model) if d.world > 1 else model


def checkpoint_due(done: int, every: int, total: int, stopping: bool = False) -> bool:
    """Whether to write ``last.pt`` after ``done`` epochs (or steps): every ``every``, at the end, or
    when the run stops early."""
    return done % max(1, every) == 0 or done == total or stopping


# ---------------------------------------------------------------------------------------------------
# logging
class RunLogger:
    """CSV (``log.csv``) + TensorBoard logs of one run (main process only); ``step_key`` is the x axis."""

    def __init__(self, out: Path, enabled: bool = True, step_key: str = "epoch") -> None:
        self.enabled = enabled
        self.step_key = step_key
        self.csv_path = Path(out) / "log.csv"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # heavy (tensorboard): only when logging

            self.tb = SummaryWriter(str(Path(out) / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        for k, v in row.items():
            if isinstance(v, int | float) and k != self.step_key:
                self.tb.add_scalar(f"{row.get('stage', 'train')}/{k}", v, row[self.step_key])
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def progress(iterable: Iterable, enabled: bool, desc: str) -> Iterable:
    """A tqdm bar on an interactive terminal when ``enabled``."""
    if not enabled:
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------------------
# command line
def add_run_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """The options every training command takes: --config, --out, --resume, --stop-after, --device, --set."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--out", default=None, help="run folder (default runs/<config name>-<stage>)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=0,
        metavar="N",
        help="stop after N epochs of this call (time-boxed jobs; continue with --resume)",
    )
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.path=data/synthvox (repeatable)",
    )


def run_command(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, train: Callable[[argparse.Namespace], Path]
) -> int:
    """Parse ``argv``, call ``train(args)`` and print ``wrote PATH`` (rank 0); a bad input is one line on
    stderr and exit status 2, never a traceback."""
    args = parser.parse_args(argv)
    try:
        path = train(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        end_distributed()
    if main_process():
        print(f"wrote {path}")
    return 0
