"""Ensembles of learned flows trained as one vectorised model (a seed sweep in one process).

Member k is the flow a single run with seed ``seeds[k]`` trains: the same initial weights (built
exactly as that run builds them), the same loss, its own batches (its own sampler seed) and its
own noise and probe draws (a generator that continues the single run's random stream). The
loss is summed over members; their parameters are disjoint and Adam acts element-wise, so each
member's update is its own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from eqflow.data.base import Snapshots, SnapshotSystem
from eqflow.data.datamodule import Rows
from eqflow.dynamics.divergence import probe_vectors
from eqflow.errors import check_finite_loss
from eqflow.models.exact import ExactFlowModule
from eqflow.models.exact_lowrank import LowRankExactFlow, lowrank_exact_field
from eqflow.models.flow import EquilibriumFlowModule
from eqflow.models.score import Score
from eqflow.nets.batched import BatchedFlowMLP
from eqflow.nets.jet import JetMLP


def seeded_members(build, seeds: Sequence[int]) -> tuple[list, list[torch.Generator]]:
    """``build()`` once per seed, each after seeding everything as a single run of that seed
    does, and a generator per member that continues that run's global random stream."""
    members, generators = [], []
    for seed in seeds:
        pl.seed_everything(int(seed), workers=True, verbose=False)
        members.append(build())
        g = torch.Generator()
        g.set_state(torch.get_rng_state())
        generators.append(g)
    return members, generators


class EnsembleMixin:
    """What every ensemble of flows shares, whatever its members' kind: each member draws its
    noise from its own generator, the loss is summed over members (their parameters are
    disjoint and Adam acts element-wise, so each member's update is its own), each member's
    epoch losses are kept, and the generators travel in checkpoints. A concrete ensemble puts
    this before its member class and sets ``generators`` in its constructor."""

    generators: list[torch.Generator]

    def _init_streams(self, generators: list[torch.Generator]) -> None:
        self.generators = generators
        self.member_losses: list[list[float]] = []  # per epoch: each member's mean loss
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_batches = 0

    @property
    def n_members(self) -> int:
        return len(self.hparams.seeds)

    def _draw(self, shape, draw) -> torch.Tensor:
        return torch.stack([draw(shape, g) for g in self.generators]).to(self.device)

    def noised(self, x0: torch.Tensor) -> torch.Tensor:
        """Batches ``x0`` (K, B, d) noised, member k's noise from its own generator."""
        eps = self._draw(x0.shape[1:], lambda s, g: torch.randn(s, generator=g, dtype=x0.dtype))
        a = self.alpha.to(x0)
        return torch.sqrt(a) * x0 + torch.sqrt(1 - a) * eps

    def calibration_points(self, x0: torch.Tensor) -> torch.Tensor:
        """Each member's noised calibration points (K, n, d), drawn from its own generator as a
        single run draws them."""
        n = min(len(x0), self.hparams.calibration_points)
        points = []
        for g in self.generators:
            idx = torch.randperm(len(x0), generator=g)[:n]
            points.append(self.score_model.noise(x0[idx], generator=g))
        return torch.stack(points).to(self.device)

    def training_step(self, x0: torch.Tensor, batch_idx: int) -> torch.Tensor:
        parts = self.loss_parts(x0)
        per_member = parts["loss"]
        total = per_member.sum()
        check_finite_loss(total, "flow", self.global_step)
        detached = per_member.detach()
        self._epoch_sums = detached if self._epoch_sums is None else self._epoch_sums + detached
        self._epoch_batches += 1
        self.log("train/loss", per_member.mean(), on_step=False, on_epoch=True, prog_bar=True)
        self.log_parts(parts)
        return total

    def on_train_epoch_start(self) -> None:
        # a single run's DataLoader draws its workers' base seed from the global generator each
        # time an epoch's iterator is made; each member's stream makes the same draw
        for g in self.generators:
            torch.empty((), dtype=torch.int64).random_(generator=g)
        super().on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        if self._epoch_batches:
            self.member_losses.append((self._epoch_sums / self._epoch_batches).cpu().tolist())
        self._epoch_sums, self._epoch_batches = None, 0
        super().on_train_epoch_end()

    def member_settings(self) -> dict:
        return {key: value for key, value in self.hparams.items() if key not in ("seeds", "dim")}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["member_generators"] = [g.get_state() for g in self.generators]
        checkpoint["member_losses"] = self.member_losses

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        for g, state in zip(self.generators, checkpoint.get("member_generators", [])):
            g.set_state(state)
        self.member_losses = list(checkpoint.get("member_losses", []))


class EnsembleFlowModule(EnsembleMixin, EquilibriumFlowModule):
    """``len(seeds)`` :class:`EquilibriumFlowModule` members as one model; ``member(k)`` gives
    member k as a plain flow. Every flow setting applies to all members."""

    def __init__(self, score: Score, dim: int, seeds: Sequence[int], **flow_settings):
        members, generators = seeded_members(
            lambda: EquilibriumFlowModule(score, dim, **flow_settings), seeds
        )
        super().__init__(score, dim, **flow_settings)
        self.save_hyperparameters(ignore=["score"])  # adds seeds
        self.net = BatchedFlowMLP([m.net for m in members])
        if self.hparams.relax_anchor > 0:
            self.anchor = copy.deepcopy(self.net).requires_grad_(False)
        self._init_streams(generators)

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's field at ``x``: (B, d) or (K, B, d) in, (K, B, d) out."""
        if x.ndim == 2:
            x = x.expand(self.n_members, *x.shape)
        return self.net.with_running_stats(x)

    def probes(self, x: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        shape = torch.empty(x.shape[1:], dtype=x.dtype)  # drawn on the CPU, where g lives
        per_member = [probe_vectors(shape, hp.n_probes, hp.probe, g) for g in self.generators]
        return torch.stack(per_member, dim=1).to(x)

    def loss_parts(self, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's loss per member (``loss``: (K,)) on batches ``x0`` (K, B, d), each member's
        noise from its own generator."""
        x = self.noised(x0)
        with torch.no_grad():
            s = self.score(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        return self.continuity_loss(x, s)

    @torch.no_grad()
    def calibrate(self, x0: torch.Tensor) -> None:
        """Each member's batch-norm statistics from many noised points of its own draw."""
        self.net.norm.set_running_stats(self.net.pre_norm(self.calibration_points(x0)))

    def member(self, k: int) -> EquilibriumFlowModule:
        """Member ``k`` as a plain :class:`EquilibriumFlowModule` (the score model shared)."""
        flow = EquilibriumFlowModule(self.score_model, self.hparams.dim, **self.member_settings())
        state = {f"net.{key}": value for key, value in self.net.member_state(k).items()}
        if self.hparams.relax_anchor > 0:
            state.update(
                {f"anchor.{key}": value for key, value in self.anchor.member_state(k).items()}
            )
            state["anchor_set"] = self.anchor_set.clone()
        flow.load_state_dict({**flow.state_dict(), **state})
        return flow.to(self.device).eval()


class ExactEnsembleFlowModule(EnsembleMixin, ExactFlowModule):
    """``len(seeds)`` :class:`ExactFlowModule` members as one model (one stacked network)."""

    def __init__(self, score: Score, dim: int, seeds: Sequence[int], **flow_settings):
        members, generators = seeded_members(
            lambda: ExactFlowModule(score, dim, **flow_settings), seeds
        )
        super().__init__(score, dim, **flow_settings)
        self.save_hyperparameters(ignore=["score"])  # adds seeds
        self.net = JetMLP.stack([m.net for m in members])
        self.running_sq = torch.cat([m.running_sq for m in members])
        self._init_streams(generators)

    def member(self, k: int) -> ExactFlowModule:
        """Member ``k`` as a plain :class:`ExactFlowModule` (the score model shared)."""
        flow = ExactFlowModule(self.score_model, self.hparams.dim, **self.member_settings())
        state = {f"net.{key}": value for key, value in self.net.member_state(k).items()}
        state["running_sq"] = self.running_sq[k : k + 1].clone()
        flow.load_state_dict({**flow.state_dict(), **state})
        return flow.to(self.device).eval()


class LowRankExactEnsemble(EnsembleMixin, LowRankExactFlow):
    """``len(seeds)`` :class:`LowRankExactFlow` members as one model: their hollow networks side
    by side (each member's step is its own pass, not one stacked one), each member's noise and
    probes from its own generator, so member k is the flow a single run of ``seeds[k]`` trains."""

    def __init__(self, score: Score, dim: int, seeds: Sequence[int], **flow_settings):
        members, generators = seeded_members(
            lambda: LowRankExactFlow(score, dim, **flow_settings), seeds
        )
        super().__init__(score, dim, **flow_settings)
        self.save_hyperparameters(ignore=["score"])  # adds seeds
        del self.net
        self.nets = torch.nn.ModuleList(m.net for m in members)
        self.running_sq = torch.cat([m.running_sq for m in members])
        self._init_streams(generators)

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's field: (B, d) or (K, B, d) in (row block k to member k), (K, B, d) out."""
        if x.ndim == 2:
            x = x.expand(self.n_members, *x.shape)
        scale = torch.sqrt(self.hparams.dim / self.running_sq).to(x)
        fields = [lowrank_exact_field(n, xk, self.score(xk)) for n, xk in zip(self.nets, x)]
        return torch.stack(fields) * scale[:, None, None]

    def loss_parts(self, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each member's loss (K,) on its batch of ``x0`` (K, B, d)."""
        x = self.noised(x0)
        per_member = [
            self.strain_parts(net, xk, g) for net, xk, g in zip(self.nets, x, self.generators)
        ]
        parts = {key: torch.stack([p[key] for p in per_member]) for key in per_member[0]}
        if self.training:
            with torch.no_grad():
                self.running_sq.lerp_(parts["mean_sq"].detach(), self.hparams.norm_momentum)
        return parts

    @torch.no_grad()
    def calibrate(self, x0: torch.Tensor) -> None:
        points = self.calibration_points(x0)
        for k, (net, xk) in enumerate(zip(self.nets, points)):
            total = sum(
                lowrank_exact_field(net, c, self.score(c)).pow(2).sum() for c in xk.split(4096)
            )
            self.running_sq[k] = total / xk.shape[0]

    def member(self, k: int) -> LowRankExactFlow:
        """Member ``k`` as a plain :class:`LowRankExactFlow` (the score model shared)."""
        flow = LowRankExactFlow(self.score_model, self.hparams.dim, **self.member_settings())
        flow.net.load_state_dict(self.nets[k].state_dict())
        flow.running_sq.copy_(self.running_sq[k : k + 1])
        return flow.to(self.device).eval()


class _MemberBatches(Sampler):
    """One batch of rows per member per step, member k's from its own seeded shuffle."""

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int]):
        self.n, self.batch_size, self.seeds = n, batch_size, list(seeds)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in self.seeds]

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self):
        orders = [iter(RandomSampler(range(self.n), generator=g)) for g in self.generators]
        for _ in range(len(self)):
            yield [[next(order) for _ in range(self.batch_size)] for order in orders]
        for order in orders:  # run each shuffle out, as a single run's batch sampler does, so
            for _ in order:  # that the next epoch draws from the same generator state
                pass


class EnsembleDataModule(pl.LightningDataModule):
    """Batches (K, B, d): member k's rows in the order a single run of seed ``seeds[k]`` sees."""

    def __init__(
        self, system: SnapshotSystem, snapshots: Snapshots, batch_size: int, seeds: Sequence[int]
    ):
        super().__init__()
        self.system, self.snapshots, self.seeds = system, snapshots, list(seeds)
        self.batch_size = min(int(batch_size), len(snapshots.x))
        self.sampler = _MemberBatches(len(snapshots.x), self.batch_size, self.seeds)

    @property
    def x(self) -> torch.Tensor:
        return self.snapshots.x

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Rows(self.x), sampler=self.sampler, batch_size=None)

    def state_dict(self) -> dict:
        return {"generators": [g.get_state() for g in self.sampler.generators]}

    def load_state_dict(self, state: dict) -> None:
        for g, s in zip(self.sampler.generators, state["generators"]):
            g.set_state(s)


ENSEMBLES = {
    EquilibriumFlowModule: EnsembleFlowModule,
    ExactFlowModule: ExactEnsembleFlowModule,
    LowRankExactFlow: LowRankExactEnsemble,
}
