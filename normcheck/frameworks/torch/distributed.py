"""Distributed batch norm over torch.distributed (``--world-size``): torch.nn.SyncBatchNorm or the
user's own, run in W rank processes on localhost with the gloo backend.

The worker that runs a case is the ranks' orchestrator: it starts W rank processes (in its own
process group, each killed by the kernel when the worker ends), lets rank 0 pick a free port for
the rendezvous (a TCPStore bound to port 0), and keeps the group for the next cases of the same
world size. Each case deals the global batch out to the ranks (``split_batch``: unequal shares),
each rank trains and runs its slice, all-reduces its weight and bias gradients (a sum, as DDP
would before dividing by W) and sends its outputs back. A rank that raises, dies or does not
answer in time ends the group: every rank is killed and the case is an error row naming the rank.

The rank program is ``rank_main`` in this module, started as ``python -P -c RANK_BOOT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import torch

from normcheck.frameworks.base import Framework, Implementation, KnownIssue, RunOutput
from normcheck.frameworks.torch.adapter import TORCH_DTYPES, device_problem, tensor
from normcheck.frameworks.torch.facts import KNOWN_ISSUES, TORCH
from normcheck.names import CONTIGUOUS, Layout
from normcheck.problem import Problem
from normcheck.verify.distributed import split_batch, unsplittable, world_label

SYNC_BATCH_NORM = "nn.SyncBatchNorm"  # the built-in target; any other target is a user spec
RANK_MARK = "normcheck-rank"  # in every rank's command line, so tests can find leftovers
RANK_BOOT = (
    "import json, os, sys; sys.path.extend(json.loads(os.environ.pop('NORMCHECK_RANK_PATH')));"
    " from normcheck.frameworks.torch.distributed import rank_main; rank_main()"
)
DEFAULT_RANK_TIMEOUT = 60.0  # seconds a rank may take per step when the case has no timeout
START_TIMEOUT = 120.0  # importing torch in W processes at once on a small machine takes a while


class DistributedError(RuntimeError):
    """A rank raised, died or hung: the case is an error row with this message."""


# ---- the worker's side ----------------------------------------------------------------------


class RankGroup:
    """W rank processes joined in one gloo process group, kept for the cases of one world size."""

    def __init__(self, world: int, device: str, timeout: float) -> None:
        self.world, self.device = world, device
        self.procs: list[subprocess.Popen[bytes]] = []
        self.conns: list[_Duplex] = []
        env = {**os.environ, "NORMCHECK_RANK_PATH": json.dumps([p for p in sys.path if p])}
        try:
            for rank in range(world):
                to_r, to_w = os.pipe()
                from_r, from_w = os.pipe()
                try:
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            "-P",
                            "-c",
                            RANK_BOOT,
                            RANK_MARK,
                            str(rank),
                            str(world),
                            str(to_r),
                            str(from_w),
                        ],
                        pass_fds=(to_r, from_w),
                        stdin=subprocess.DEVNULL,
                        env=env,
                    )
                finally:
                    os.close(to_r)
                    os.close(from_w)
                self.procs.append(proc)
                self.conns.append(_Duplex(Connection(from_r, writable=False), Connection(to_w, readable=False)))
            deadline = time.monotonic() + min(START_TIMEOUT, timeout)
            (port,) = self._gather(deadline - time.monotonic(), ranks=[0])
            for conn in self.conns[1:]:
                conn.send(("port", port))
            self._gather(deadline - time.monotonic())
        except BaseException:
            self.close()
            raise

    def run(self, messages: list[Any], timeout: float) -> list[Any]:
        """Send each rank its message; their answers, in rank order. DistributedError (the group
        then closed) when a rank raises, dies or does not answer within ``timeout`` seconds."""
        try:
            for conn, message in zip(self.conns, messages, strict=True):
                conn.send(("case", message))
            return self._gather(timeout)
        except BaseException:
            self.close()
            raise

    def _gather(self, timeout: float, ranks: list[int] | None = None) -> list[Any]:
        ranks = list(range(self.world)) if ranks is None else ranks
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(ranks):
            waiting: dict[Any, int] = {self.conns[r].reader: r for r in ranks if r not in answers}
            left = deadline - time.monotonic()
            ready = wait(list(waiting), timeout=max(left, 0)) if left > 0 else []
            if not ready:
                slow = ", ".join(str(r) for r in waiting.values())
                raise DistributedError(
                    f"rank {slow} did not answer within {max(timeout, 0):.3g} s (hung, or blocked in a collective "
                    "another rank never joined); every rank was killed"
                )
            for reader in ready:
                rank = waiting[reader]
                try:
                    kind, value = self.conns[rank].reader.recv()
                except (EOFError, OSError):
                    raise DistributedError(f"rank {rank} {self._exit(rank)}; every rank was killed") from None
                if kind == "error":
                    raise DistributedError(self._first_death() or f"rank {rank}: {value}")
                answers[rank] = value
        return [answers[r] for r in ranks]

    def _first_death(self) -> str | None:
        """A rank that died, when another reports an error: the collective it was in lost a peer,
        and the death is the cause to name."""
        time.sleep(0.2)  # the peer's error can arrive before its exit status
        dead = [r for r, proc in enumerate(self.procs) if proc.poll() is not None]
        return f"rank {dead[0]} {self._exit(dead[0])}; every rank was killed" if dead else None

    def _exit(self, rank: int) -> str:
        from normcheck.engine.deaths import describe_exit

        proc = self.procs[rank]
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
        return describe_exit(proc.returncode) if proc.returncode is not None else "closed its pipe"

    def close(self) -> None:
        """Kill every rank (the process group goes with them) and reap them."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        _groups.pop((self.world, self.device), None)


@dataclass
class _Duplex:
    reader: Connection
    writer: Connection

    def send(self, message: Any) -> None:
        try:
            self.writer.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise DistributedError("a rank closed its pipe before the case was sent; every rank was killed") from None

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


_groups: dict[tuple[int, str], RankGroup] = {}


def rank_group(world: int, device: str, timeout: float) -> RankGroup:
    key = (world, device)
    if key not in _groups:
        _groups[key] = RankGroup(world, device, timeout)
    return _groups[key]


def close_groups() -> None:
    for group in list(_groups.values()):
        group.close()


_cpu_problem: list[str | None] = []


def sync_batch_norm_cpu_problem() -> str | None:
    """Why torch.nn.SyncBatchNorm cannot run on CPU tensors in the installed torch, or None. Its
    forward refuses CPU input when a process group is initialized, and the kernels it calls
    (aten::batch_norm_stats, ...) have no CPU implementation: probed, not assumed."""
    if not _cpu_problem:
        try:
            torch.batch_norm_stats(torch.zeros(2, 1, dtype=torch.float64), 1e-5)
            _cpu_problem.append(None)
        except (RuntimeError, NotImplementedError) as e:
            first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
            _cpu_problem.append(
                f"torch {torch.__version__.split('+')[0]}'s nn.SyncBatchNorm runs on GPU devices only: it refuses "
                f"CPU input and its kernels have no CPU implementation ({first}); run it with --device cuda, "
                "or check your own CPU implementation with --impl"
            )
    return _cpu_problem[0]


class DistributedImplementation(Implementation):
    """Batch norm run by ``target`` (nn.SyncBatchNorm, or a user spec) in ``world`` rank processes."""

    framework = "torch"

    def __init__(self, op: str, target: str, label: str, world: int, device: str, timeout: float | None) -> None:
        self.op, self.target, self.world, self.device = op, target, world, device
        self.name = world_label(label, world)
        self.rank_timeout = DEFAULT_RANK_TIMEOUT if timeout is None else max(0.8 * timeout, 0.5)

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return (CONTIGUOUS,)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        reason = unsplittable(problem.shape, self.world)
        if reason is None and self.target == SYNC_BATCH_NORM and self.device == "cpu":
            reason = sync_batch_norm_cpu_problem()
        return reason

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        sizes = split_batch(problem.shape[0], self.world)
        starts = np.cumsum([0, *sizes])
        messages = []
        for rank in range(self.world):
            cut = slice(int(starts[rank]), int(starts[rank + 1]))
            messages.append(
                {
                    "target": self.target,
                    "device": device,
                    "dtype": problem.dtype,
                    "train": problem.params.mode == "train",
                    "eps": problem.eps,
                    "momentum": problem.momentum,
                    "steps": [s[cut] for s in problem.steps],
                    "x": problem.x[cut],
                    "dy": problem.dy[cut],
                    "weight": problem.weight,
                    "bias": problem.bias,
                    "running": problem.initial_running() if problem.params.running_stats else None,
                }
            )
        start = time.monotonic()  # starting the ranks counts against the case's time too
        group = rank_group(self.world, device, self.rank_timeout)
        answers = group.run(messages, max(self.rank_timeout - (time.monotonic() - start), 0.5))
        out = RunOutput()
        for check in ("forward", "grad_input"):
            out.add(check, np.concatenate([a[check][0] for a in answers]), answers[0][check][1])
        for check in ("grad_weight", "grad_bias", "running_mean", "running_var"):
            if check in answers[0]:
                out.add(check, *answers[0][check])  # summed over the ranks; rank 0's statistics
        return out


class DistributedFramework(Framework):
    """torch.distributed batch norm: built in (nn.SyncBatchNorm) or the user's ``--impl``."""

    name = "torch"
    conventions = TORCH
    known_issues: tuple[KnownIssue, ...] = KNOWN_ISSUES

    def __init__(self, target: str = SYNC_BATCH_NORM, label: str = SYNC_BATCH_NORM) -> None:
        self.target, self.label = target, label
        if target != SYNC_BATCH_NORM:
            self.name, self.known_issues = "user", ()  # the user's code, under PyTorch's conventions

    def implementations(self, op: str) -> list[Implementation]:
        return []

    def distributed_implementations(
        self, op: str, world_sizes: tuple[int, ...], device: str, timeout: float | None
    ) -> list[Implementation]:
        if op != "bn":
            return []
        return [DistributedImplementation(op, self.target, self.label, w, device, timeout) for w in world_sizes]

    def device_problem(self, device: str) -> str | None:
        return device_problem(device)


# ---- the rank's side ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: the kernel kills this rank when the worker that started it ends, however it ends."""
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    if os.getppid() != parent:
        os._exit(1)


_loaded: dict[str, Any] = {}


def _target(spec: str) -> Any:
    if spec == SYNC_BATCH_NORM:
        return torch.nn.SyncBatchNorm
    if spec not in _loaded:
        from normcheck.user.spec import load_object, parse_spec

        _loaded[spec] = load_object(parse_spec(spec))
    return _loaded[spec]


def _numpy(t: torch.Tensor | None, what: str) -> tuple[np.ndarray, str]:
    if t is None:
        raise RuntimeError(f"no {what} was produced")
    return t.detach().to("cpu", torch.float64).numpy(), str(t.dtype).removeprefix("torch.")


def _bind(m: dict[str, Any]) -> tuple[Callable[[torch.Tensor, bool], torch.Tensor], dict[str, torch.Tensor | None]]:
    """The rank's forward for a case and the tensors it owns (weight, bias, running statistics)."""
    import inspect

    dtype, device = m["dtype"], m["device"]
    target = _target(m["target"])
    channels = int(m["x"].shape[1])
    running = m["running"]
    if inspect.isclass(target):
        make: Callable[..., torch.nn.Module] = target  # SyncBatchNorm's constructor
        module = make(
            channels, eps=m["eps"], momentum=m["momentum"], affine=m["weight"] is not None, track_running_stats=True
        ).to(device=device, dtype=TORCH_DTYPES[dtype])
        with torch.no_grad():
            for name, value in (("weight", m["weight"]), ("bias", m["bias"])):
                if value is not None:
                    getattr(module, name).copy_(tensor(value, dtype, device))
            for name, value in zip(("running_mean", "running_var"), running or (None, None), strict=True):
                if value is not None:
                    getattr(module, name).copy_(tensor(value, dtype, device))
        owned = {k: getattr(module, k, None) for k in ("weight", "bias", "running_mean", "running_var")}
        return (lambda x, train: module.train(train)(x)), owned
    if not callable(target):
        raise TypeError(f"{m['target']} is neither an nn.Module class nor a function")
    fn: Callable[..., torch.Tensor] = target
    w = None if m["weight"] is None else tensor(m["weight"], dtype, device).requires_grad_(True)
    b = None if m["bias"] is None else tensor(m["bias"], dtype, device).requires_grad_(True)
    rm = rv = None
    if running is not None:
        rm, rv = (tensor(v, dtype, device) for v in running)
    owned = {"weight": w, "bias": b, "running_mean": rm, "running_var": rv}
    return (lambda x, train: fn(x, rm, rv, w, b, train, m["momentum"], m["eps"])), owned


def run_rank_case(m: dict[str, Any]) -> dict[str, tuple[np.ndarray, str]]:
    """One case on this rank's slice: training steps, then forward and backward of ``x``; the
    weight and bias gradients summed over every rank."""
    import torch.distributed as dist

    dtype, device = m["dtype"], m["device"]
    forward, owned = _bind(m)
    with torch.no_grad():
        for batch in m["steps"]:
            forward(tensor(batch, dtype, device), True)
    x = tensor(m["x"], dtype, device).requires_grad_(True)
    y = forward(x, m["train"] or m["running"] is None)
    y.backward(tensor(m["dy"], dtype, device))
    out = {"forward": _numpy(y, "forward"), "grad_input": _numpy(x.grad, "input gradient")}
    for name, check in (("weight", "grad_weight"), ("bias", "grad_bias")):
        param = owned[name]
        if param is not None:
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            summed = grad.detach().to(torch.float64).clone()
            dist.all_reduce(summed, op=dist.ReduceOp.SUM)  # as DDP does (before dividing by W)
            out[check] = (summed.cpu().numpy(), str(grad.dtype).removeprefix("torch."))
    if m["running"] is not None:
        out["running_mean"] = _numpy(owned["running_mean"], "running mean")
        out["running_var"] = _numpy(owned["running_var"], "running variance")
    return out


def rank_main() -> None:
    """A rank: ``RANK_MARK RANK WORLD READ_FD WRITE_FD`` on its command line."""
    _die_with_parent()
    import warnings
    from datetime import timedelta

    import torch.distributed as dist

    from normcheck.engine.deaths import escaped

    warnings.simplefilter("ignore")
    rank, world, read_fd, write_fd = (int(a) for a in sys.argv[-4:])
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    torch.set_num_threads(1)
    try:
        if rank == 0:
            store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False)
            outbox.send(("port", store.port))
        else:
            _, port = inbox.recv()
            store = dist.TCPStore("127.0.0.1", port, world, is_master=False)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timedelta(minutes=10))
        outbox.send(("ready", None))
    except BaseException as e:
        with contextlib.suppress(OSError):
            outbox.send(("error", f"could not join the process group: {escaped(e)}"))
        os._exit(1)
    try:
        while True:
            try:
                _kind, message = inbox.recv()
            except (EOFError, OSError):
                break
            try:
                outbox.send(("ok", run_rank_case(message)))
            except Exception as e:
                outbox.send(
                    ("error", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
                )
            except BaseException as e:  # sys.exit or the like in the user's code
                outbox.send(("error", escaped(e)))
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
