"""Each tenant's edge server on Ray Train: a `TorchTrainer` worker group behind a mailbox.

The devices (on the engine's pool) and the tenant's strategy (on the driver) call the engine
service `EdgeServer` exactly as they would call a plain actor: `begin_round(W^S)`, `step(device,
smashed, labels, mask)` -> (loss, dL/d smashed), `aggregate(weights, normalize)` -> W^S. The
service is a small asyncio actor, a *mailbox*: each call becomes a numbered request that waits
for its reply. The compute runs in `server_loop`, the train loop of a Ray Train `TorchTrainer`
(`orchestrator.train.run_distributed`: gloo on CPU, NCCL on GPU) with `server_workers` ranks:
rank 0 takes the requests in order and broadcasts each to every rank; a step splits the smashed
batch across the ranks, each rank back-propagates its rows of the loss and the ranks all-reduce
W^S's gradients before the identical optimizer steps (DDP's arithmetic, written out because
SplitFed-V1 keeps one W^S copy per device); rank 0 gathers the gradient at the cut and replies.

Fault tolerance is Ray Train's: after an aggregation (at most one per CHECKPOINT_EVERY_S) the
group reports a checkpoint (W^S and the number of the next request); once Ray Train has committed
it (asked without waiting), the mailbox forgets the requests before it. A rank that dies
makes Ray Train restart the group (`FailureConfig(max_failures)`); the new loop loads the
checkpoint and asks the mailbox for the requests since, replaying the round so far: the
per-device W^S copies are rebuilt step by step (replies already sent are dropped), so a run with
a killed rank ends with exactly the weights of one without (tests/workloads/prince).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

STOP = "stop"
CHECKPOINT_EVERY_S = 2.5  # Ray Train V2's controller polls its workers every 2 s
CHECKPOINT_FILE = "edge_server.pt"


@dataclass(frozen=True)
class Request:
    seq: int
    kind: str  # "begin_round" | "step" | "aggregate" | "state" | STOP
    args: tuple


@dataclass(frozen=True)
class ServerGroup:
    """How to run one tenant's edge server on Ray Train (pure data: it pickles to the workers)."""

    workers: int = 1              # ranks sharing each server step (data parallel)
    cpus_per_worker: float = 0.25
    gpus_per_worker: float = 0.0  # > 0: ranks compute on GPU, NCCL between them
    storage: str = ""             # absolute folder for Ray Train's run and checkpoints
    max_failures: int = 2         # group restarts from the last checkpoint before giving up
    kill_rank0_after: int | None = None  # fault injection (tests): SIGKILL rank 0 once, after
    #                                      this many replies

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


class EdgeServer:
    """The engine service: devices and strategy call it; `server_loop` on Ray Train answers."""

    def __init__(self, spec: Any, group: ServerGroup):
        import ray

        from orchestrator.train import run_distributed

        self.log: list[Request] = []          # every request since the last checkpoint
        self.pending: dict[int, asyncio.Future] = {}
        self.next_seq, self.served, self.starts, self.pids = 0, 0, [], {}
        self.kill_after = group.kill_rank0_after
        self._arrived: asyncio.Condition | None = None
        self._ended: asyncio.Future | None = None
        me = ray.get_runtime_context().current_actor
        name = f"edge-{spec.name}-{uuid.uuid4().hex[:8]}"
        fit = functools.partial(
            run_distributed, server_loop, {"spec": spec, "mailbox": me, "group": group},
            group.workers, group.use_gpu, group.storage or tempfile.mkdtemp(prefix="edge-server-"),
            name, group.max_failures, group.cpus_per_worker, group.gpus_per_worker or 1)
        # TorchTrainer.fit() blocks until the loop ends: in a thread of this actor, not a task
        self.run = concurrent.futures.ThreadPoolExecutor(1).submit(fit)

    # ---------------------------------------------------------------- what callers see
    async def begin_round(self, state: dict | None = None) -> None:
        return await self._call("begin_round", state)

    async def step(self, device: int, smashed, labels, mask, first: bool = False):
        return await self._call("step", device, smashed, labels, mask, first)

    async def aggregate(self, weights: dict[int, float], normalize: bool) -> dict:
        return await self._call("aggregate", weights, normalize)

    async def state(self) -> dict:
        return await self._call("state")

    async def shutdown(self) -> None:
        """Stop the loop after the requests before this one, and wait for the Train run to end."""
        await self._enqueue(STOP, ())
        await asyncio.wrap_future(self.run)

    # ---------------------------------------------------------------- what the loop sees
    async def next_request(self, seq: int) -> Request:
        """Request number `seq` (rank 0 asks in order; after a restart, from its checkpoint)."""
        async with self._condition():
            await self._arrived.wait_for(lambda: self.next_seq > seq)
        found = [r for r in self.log if r.seq == seq]
        if not found:  # only a loop that lost its checkpoint asks for a forgotten request
            raise LookupError(f"edge server request {seq} was forgotten (the log starts at "
                              f"{self.log[0].seq if self.log else self.next_seq}): the Ray Train "
                              f"group restarted without its last checkpoint")
        return found[0]

    async def reply(self, seq: int, result: Any) -> None:
        """Answer request `seq`; a replayed request's second answer is dropped."""
        waiter = self.pending.pop(seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
        self.served += 1
        if self.kill_after is not None and self.served >= self.kill_after and 0 in self.pids:
            self.kill_after = None
            os.kill(self.pids[0], signal.SIGKILL)

    async def checkpointed(self, next_seq: int) -> None:
        """The group saved a checkpoint that resumes at `next_seq`: forget what came before."""
        self.log = [r for r in self.log if r.seq >= next_seq]

    async def attach(self, rank: int, pid: int, seq: int) -> None:
        """Rank `rank` (process `pid`) starts serving at request `seq` (> 0: from a checkpoint)."""
        self.pids[rank] = pid
        self.starts.append(seq)

    async def ranks_started(self) -> list[int]:
        """Where each rank start resumed, in order: workers x (1 + restarts) entries."""
        return self.starts

    # ---------------------------------------------------------------- plumbing
    def _condition(self) -> asyncio.Condition:
        if self._arrived is None:  # made on the actor's event loop, not in __init__
            self._arrived = asyncio.Condition()
        return self._arrived

    async def _enqueue(self, kind: str, args: tuple, waiter: asyncio.Future | None = None):
        """Number and log a request, and wake the loop waiting for it."""
        async with self._condition():
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            if waiter is not None:
                self.pending[seq] = waiter
            self.log.append(Request(seq, kind, args))
            self._arrived.notify_all()

    async def _call(self, kind: str, *args: Any) -> Any:
        """The reply to a new request; the Train run's error if it ended first (a group out of
        restarts must fail its callers, not leave them waiting)."""
        waiter = asyncio.get_running_loop().create_future()
        await self._enqueue(kind, args, waiter)
        if self._ended is None:  # one asyncio view of the run, on the actor's event loop
            self._ended = asyncio.wrap_future(self.run)
        run = self._ended
        await asyncio.wait({waiter, run}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            return waiter.result()
        raise RuntimeError(f"the edge server's Ray Train run ended before answering {kind!r}: "
                           f"{run.exception() or 'it stopped'}")


# -------------------------------------------------------------------- the Ray Train loop
def server_loop(config: dict) -> None:
    """Every rank: restore the last checkpoint, then serve requests in order until STOP."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from orchestrator.runtime import own_scheduling_group
    from workloads.prince.programs import split_of
    from workloads.prince.split import ServerSide

    own_scheduling_group()
    torch.set_num_threads(1)
    spec, mailbox, group = config["spec"], config["mailbox"], config["group"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if group.use_gpu else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    side = ServerSide(split_of(spec).server.to(device), spec.lr, spec.optimizer)
    seq = _restore(side, device)
    ray.get(mailbox.attach.remote(rank, os.getpid(), seq))
    forgotten = seq  # the mailbox holds every request from here on
    clock = [-math.inf]  # when rank 0 last reported a checkpoint
    while True:
        box = [ray.get(mailbox.next_request.remote(seq)) if rank == 0 else None]
        if world > 1:
            dist.broadcast_object_list(box, src=0)
        request = box[0]
        if request.kind == STOP:
            return
        result = _serve(side, request, device, rank, world)
        if rank == 0:
            ray.get(mailbox.reply.remote(request.seq, result))
        seq = request.seq + 1
        if request.kind == "aggregate" and _due(clock, rank, world):
            committed = _committed_seq() if rank == 0 else None
            if committed is not None and committed > forgotten:
                ray.get(mailbox.checkpointed.remote(committed))
                forgotten = committed
            _report(side, seq, rank)


def _serve(side: Any, request: Request, device: Any, rank: int, world: int) -> Any:
    def on(tensors: dict | None) -> dict | None:
        return None if tensors is None else {k: v.to(device) for k, v in tensors.items()}

    if request.kind == "begin_round":
        side.begin_round(on(request.args[0]))
        return None
    if request.kind == "step":
        device_id, smashed, labels, mask, first = request.args
        if first:  # a retried device starts its copy over
            side.copies.pop(device_id, None)
        loss, grad = data_parallel_step(side, device_id, smashed.to(device), labels.to(device),
                                        None if mask is None else mask.to(device), rank, world)
        return loss, grad.cpu()
    if request.kind == "aggregate":
        state = side.aggregate(*request.args)
        side.begin_round(state)  # the server keeps W^S; the checkpoint holds it
        return {k: v.cpu() for k, v in state.items()}
    return {k: v.cpu() for k, v in side.state().items()}  # "state"


def data_parallel_step(side: Any, device_id: int, smashed, labels, mask, rank: int,
                       world: int) -> tuple[float, Any]:
    """`ServerSide.step` with the batch's rows split over `world` ranks: each rank's share of
    the mean loss (its targets' summed cross entropy / all ranks' targets), W^S gradients
    summed by all-reduce, the same optimizer step everywhere; (loss, dL/d smashed, all rows)."""
    import torch
    import torch.distributed as dist
    from torch.nn import functional as F

    if world == 1:
        return side.step(device_id, smashed, labels, mask)
    model, opt = side._copy(device_id)
    rows = torch.tensor_split(torch.arange(len(labels)), world)[rank]
    cut = smashed[rows].detach().requires_grad_()
    extra = {} if mask is None else {"attention_mask": mask[rows]}
    opt.zero_grad(set_to_none=True)
    logits, targets = model.scored_logits(cut, labels[rows], **extra)
    count = torch.tensor(float(len(targets)), device=smashed.device)
    dist.all_reduce(count)
    loss = F.cross_entropy(logits.float(), targets, reduction="sum") / count
    loss.backward()
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
    opt.step()
    total = loss.detach().clone()
    dist.all_reduce(total)
    grads = [None] * world
    dist.all_gather_object(grads, cut.grad.detach().cpu())
    return float(total), torch.cat(grads).to(smashed.device)


def _restore(side: Any, device: Any) -> int:
    """W^S from Ray Train's last checkpoint (none: the spec's weights); the next request's seq."""
    import ray.train
    import torch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        saved = torch.load(os.path.join(folder, CHECKPOINT_FILE), weights_only=True)
    side.begin_round({k: v.to(device) for k, v in saved["state"].items()})
    return int(saved["next_seq"])


def _report(side: Any, next_seq: int, rank: int) -> None:
    """Every rank reports (Ray Train's barrier); rank 0 attaches W^S as the checkpoint."""
    import ray.train
    import torch

    if rank != 0:
        ray.train.report({"next_seq": next_seq}, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="edge-ckpt-") as folder:
        torch.save({"state": {k: v.cpu() for k, v in side.state().items()},
                    "next_seq": next_seq}, os.path.join(folder, CHECKPOINT_FILE))
        ray.train.report({"next_seq": next_seq},
                         checkpoint=ray.train.Checkpoint.from_directory(folder))


def _due(clock: list, rank: int, world: int) -> bool:
    """Whether this aggregation reports a checkpoint: at most one per CHECKPOINT_EVERY_S, since
    Ray Train's controller takes one report per poll and a second one waits for it (rounds of
    small models are shorter than that; a restart replays the rounds since). Rank 0 decides."""
    import torch.distributed as dist

    box = [time.monotonic() - clock[0] >= CHECKPOINT_EVERY_S] if rank == 0 else [None]
    if world > 1:
        dist.broadcast_object_list(box, src=0)
    if box[0] and rank == 0:
        clock[0] = time.monotonic()
    return bool(box[0])


def _committed_seq() -> int | None:
    """The resume point of the newest checkpoint Ray Train has committed, without waiting (the
    controller commits on its next poll, ~2 s): a group restarted now resumes from there, so
    the mailbox may forget the requests before it, and never any after."""
    import ray.train

    reported = ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=0)
    return max((int(r.metrics["next_seq"]) for r in reported if "next_seq" in r.metrics),
               default=None)
