"""``neumeta``: one task-conditioned INR generates every task's network at any width.

Per experience ``t`` (task-incremental: one head per task; class-incremental below):

1. *Teacher.* A full-width network of the target family is trained on the experience (Lightning),
   its BatchNorm folded into its convolutions and its hidden units reordered along a shortest
   Hamiltonian path (``hypernet.smoothing``), so that weights vary smoothly with unit position.
   ``teacher_width`` < 1 trains it narrower, for a fraction of the cost, and Net2Wider copies its
   units up to full width (the same function, ``widened``).
   ``recon_steps`` reconstruction-only steps (no data) then warm-start the new task.
   ``teachers: first`` trains a teacher for the first experience only.
2. *Old tasks' targets.* The weights the generator currently produces for every earlier task are
   stored at every training width (von Oswald et al. 2020 store them at one size; NeuMeta's
   promise is every size).
3. *Training.* Each step generates task ``t``'s network three times, with coordinate noise: at
   full width, at the narrowest training width and at a width drawn from the training widths.
   The learning rate decays to zero over the experience (``lr_schedule: cosine``). The loss is

     CE(full) + CE(narrowest) + CE(drawn)               task loss at three widths (sandwich rule)
     + recon_weight * sum|w*| (w - w*)^2 / sum|w*|      magnitude-weighted, full width
     + l2_weight * mean(w^2)                             small weights
     + reg_weight * mean_{k<t, d in {full, d'}} mean (G(e_k, d) - G*(e_k, d))^2   old tasks stay put

   where ``w*`` is the smoothed teacher and ``d'`` another drawn width. ``narrower_per_step: 1``
   keeps one of the two narrower terms per step, drawn at random (NeuMeta's own training draws one
   width per step; here the full width stays in every step). ``sandwich_batch`` < 1
   gives the narrowest and the drawn width part of each batch; ``full_batch`` < 1 does the same
   for the full width (0: it learns from its teacher alone). ``reg_tasks`` > 0 draws
   that many old tasks per step instead of all (von Oswald et al.'s stochastic regulariser; the
   mean over them estimates the mean over all), and ``reg_fraction`` < 1 compares a random part of
   each old network's weights (its queries are all the INR computes for it); ``reg_budget: shared``
   makes that part ``reg_fraction / (old tasks)``, so the regulariser's cost stops growing with the
   tasks. All three compare the INR's
   raw outputs, which have unit scale in every layer (see ``hypernet.generator``). Old task
   embeddings are frozen; the new task's embedding (random, as in von Oswald et al.) and the INR
   train.

``widths_unseen`` are held out of training, so the width sweep can show a width never sampled.
What a step costs does not depend on its batch: the INR pass is the same for 128 or 512 samples,
so ``inr_batch_size`` (with ``inr_lr``) trades steps for samples per step.

On a class- or domain-incremental stream (one shared head, no task label at test time) every
experience becomes a task of its own, with its own embedding and a head over its classes; at test
time the task is inferred (``routing``, ``hypernet.routing``): the most certain task network
answers (``entropy``, von Oswald et al.'s HNET+ENT), or a slimmable task classifier trained with
ER-ACE on a memory of ``buffer_size`` samples weighs the task networks (``router``,
``strategies.task_classifier``), or the task networks' logits are calibrated jointly on that
memory (``calibrated``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.data import TensorExperience
from neumeta_cl.errors import ConfigError
from neumeta_cl.hypernet.generator import (PRECISIONS, NeuMetaGenerator, Request, Weights, generator_from_state,
                                           generator_state, task_classifier)
from neumeta_cl.hypernet.budget import uniform_widths
from neumeta_cl.hypernet.layout import TargetLayout
from neumeta_cl.hypernet.routing import ROUTINGS, fit_calibration, route
from neumeta_cl.hypernet.smoothing import layer_weights, smooth, total_variation
from neumeta_cl.morph.widen import widen
from neumeta_cl.nets.heads import MultiHead, SingleHead
from neumeta_cl.plugins.widths import WidthSweep
from neumeta_cl.protocol import Plugin, RunSettings, StrategyReport
from neumeta_cl.runner.checkpoint import python_rng_state, set_python_rng_state
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.buffer import ReplayBuffer
from neumeta_cl.strategies.task_classifier import SlimmableTaskClassifier, measure_widths
from neumeta_cl.strategies.optim import OptimConfig
from neumeta_cl.strategies.fit import fit_experience, fit_module


def flat(weights: Weights) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for wb in weights for t in wb])


def reconstruction(raw: Weights, target: Weights) -> torch.Tensor:
    """Magnitude-weighted squared error on unit-scale raw outputs, sum|t| (g - t)^2 / sum|t|:
    large weights matter more (NeuMeta), and it is 0 for a perfect copy."""
    g, t = flat(raw), flat(target)
    m = t.abs()
    return (m * (g - t).pow(2)).sum() / m.sum().clamp_min(1e-12)


class GradClip(Plugin):
    """Clip the gradient norm before each step (INR training spikes when a new task starts)."""

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def after_backward(self, module) -> None:
        if self.max_norm:
            torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None], self.max_norm)


class GeneratedNets(nn.Module):
    """The view of the generator the runner evaluates: ``net(x, t)`` runs each task's generated
    network at ``widths``. Generated weights are cached while the INR does not change."""

    def __init__(self, generator: NeuMetaGenerator, samples: int = 1, noise: float = 0.0):
        super().__init__()
        self.generator = generator
        self.eval_widths = tuple(generator.layout.widths)
        self.samples, self.noise = samples, noise
        self.version = 0  # bumped after every optimizer step
        self._cache: dict = {}

    @property
    def widths(self) -> list[int]:
        return list(self.eval_widths)

    @property
    def input_shape(self):
        return self.generator.layout.input_shape

    def task_weights(self, task: int) -> Weights:
        if torch.is_grad_enabled():
            return self.generator.weights(task, self.eval_widths, self.noise, self.samples)
        key = (task, self.eval_widths, self.version)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[2] == self.version}
            self._cache[key] = self.generator.weights(task, self.eval_widths, self.noise, self.samples)
        return self._cache[key]

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        generator = self.generator
        if generator.infers_task:  # class-incremental: the task is inferred, t is ignored
            if not generator.heads:  # before the first experience: no task, no opinion
                return x.new_zeros((x.shape[0], generator.n_classes))
            logits = [generator.run(self.task_weights(k), k, self.eval_widths, x) for k in range(len(generator.heads))]
            router = None
            if generator.routing == "router":  # the slimmable task classifier at the same widths
                router = generator.classifier_at(self.eval_widths)
            calibration = generator.calibration_tensor() if generator.routing == "calibrated" else None
            return route(generator.routing, logits, generator.classes, generator.n_classes,
                         router_logits=None if router is None else router(x), calibration=calibration)
        if t is None:
            raise ValueError("generated networks are per task; pass t (one task label per sample)")
        tasks = t.unique().tolist()
        if len(tasks) == 1:
            task = int(tasks[0])
            return self.generator.run(self.task_weights(task), task, self.eval_widths, x)
        out = x.new_full((x.shape[0], max(self.generator.heads)), float("-inf"))
        for task in tasks:
            rows = t == task
            logits = self.generator.run(self.task_weights(int(task)), int(task), self.eval_widths, x[rows])
            out[rows, : logits.shape[1]] = logits
        return out


class NeuMeta(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, hidden: int = 208,
                 n_blocks: int = 2, n_freqs: int = 6, task_dim: int = 64, film: bool = False,
                 min_width: float = 0.25, widths_unseen: list[float] | None = None, coord_noise: float = 0.5,
                 eval_samples: int = 1, recon_weight: float = 1.0, l2_weight: float = 1e-4, reg_weight: float = 100.0,
                 teacher_epochs: int = 3, teachers: str = "every", task_init: str = "random", recon_steps: int = 300,
                 clip_grad: float = 1.0, eval_fractions: list[float] | None = None, layer_dim: int = 8,
                 lr_schedule: str = "cosine", tsp_seconds: float = 0.2, teacher_seed_offset: int = 7919,
                 teacher_data_seed_offset: int = 1000, reg_tasks: int = 0, inr_epochs: int | None = None,
                 routing: str = "entropy", buffer_size: int = 500, mem_batch_size: int | None = None,
                 router_epochs: int = 3, router_distill: float = 0.0, inr_batch_size: int | None = None,
                 inr_lr: float | None = None, reg_fraction: float = 1.0, sandwich_batch: float = 1.0,
                 full_batch: float = 1.0, inr_precision: str = "float32", narrower_per_step: int = 2,
                 router_min_width: float | None = None, router_pool: int = 1, teacher_width: float = 1.0,
                 reg_budget: str = "per_task"):
        head = getattr(net, "head", None)
        if not isinstance(head, (MultiHead, SingleHead)):
            raise ConfigError(f"strategy=neumeta generates MLP or CNN targets with a linear head, not "
                              f"{type(net).__name__}; use model=mlp or model=cnn.")
        eval_fractions = list(eval_fractions if eval_fractions is not None else [0.25, 0.5, 0.75, 1.0])
        arch = dict(hidden=hidden, n_blocks=n_blocks, n_freqs=n_freqs, layer_dim=layer_dim, task_dim=task_dim, film=film,
                    precision=inr_precision, min_width=min_width, router_min_width=router_min_width,
                    router_pool=router_pool)
        _check(min_width=min_width, router_min_width=router_min_width, router_pool=router_pool,
               layout_kind=type(net).__name__, coord_noise=coord_noise, recon_weight=recon_weight, l2_weight=l2_weight,
               reg_weight=reg_weight, reg_tasks=reg_tasks, eval_samples=eval_samples, teacher_epochs=teacher_epochs,
               teachers=teachers, task_init=task_init, eval_fractions=eval_fractions, inr_epochs=inr_epochs,
               routing=routing, router_epochs=router_epochs, router_distill=router_distill,
               inr_batch_size=inr_batch_size, inr_lr=inr_lr, reg_fraction=reg_fraction, sandwich_batch=sandwich_batch,
               full_batch=full_batch, inr_precision=inr_precision, narrower_per_step=narrower_per_step,
               teacher_width=teacher_width, reg_budget=reg_budget)
        layout = TargetLayout.from_net(net)
        train_widths, unseen_widths = training_widths(layout, min_width, widths_unseen or [])
        # Task-incremental: one generated network per task label. Class-/domain-incremental (a single
        # head): one per experience, added as it starts; at test time the task is inferred
        # (``hypernet.routing``).
        router, memory = None, None
        if isinstance(head, SingleHead):
            generator = NeuMetaGenerator(layout, [], **arch, classes=[], n_classes=head.linear.out_features,
                                         routing=routing)
            if routing == "router":  # its memory takes each experience before it trains (ER-ACE)
                generator.task_classifier = task_classifier(layout, generator.n_classes, router_pool)
                router_widths = training_widths(layout, router_min_width or min_width, widths_unseen or [])[0]
                router = SlimmableTaskClassifier(generator.task_classifier, layout, optim, router_widths,
                                                 batch_size=batch_size, seed=seed, buffer_size=buffer_size,
                                                 mem_batch_size=mem_batch_size, distill=router_distill)
                memory = router.buffer
            elif routing == "calibrated":  # fitted after training, on a memory holding this experience
                memory = ReplayBuffer(buffer_size, "class_balanced", seed)
        else:
            generator = NeuMetaGenerator(layout, head.sizes, **arch)
        # The INR's learning rate follows ``lr_schedule`` (cosine: it ends each experience settled, the
        # state the old-task regulariser then anchors); the teachers train as the run says (train.*).
        inr_optim = dataclasses.replace(optim, schedule=lr_schedule, lr=optim.lr if inr_lr is None else inr_lr)
        super().__init__(GeneratedNets(generator, eval_samples, coord_noise if eval_samples > 1 else 0.0),
                         inr_optim, batch_size=batch_size, seed=seed)
        self.teacher_optim = optim
        self.tsp_seconds = tsp_seconds
        self.teacher_seed_offset, self.teacher_data_seed_offset = teacher_seed_offset, teacher_data_seed_offset
        self.layout = layout
        self.coord_noise, self.recon_weight, self.l2_weight = coord_noise, recon_weight, l2_weight
        self.reg_weight, self.task_init, self.teachers = reg_weight, task_init, teachers
        self.reg_tasks, self.inr_epochs = reg_tasks, inr_epochs
        self.inr_batch_size, self.reg_fraction, self.sandwich_batch = inr_batch_size, reg_fraction, sandwich_batch
        self.reg_budget = reg_budget
        self.full_batch, self.narrower_per_step = full_batch, narrower_per_step
        self._row_targets: dict = {}  # (task, widths) -> (mask, old outputs as raw_rows' matrix)
        self.teacher_epochs, self.recon_steps, self.clip_grad = teacher_epochs, recon_steps, clip_grad
        self.teacher_width = teacher_width
        self.parts.append(GradClip(clip_grad))
        # Class-incremental, routing=router: the module that trains the task classifier (kept out of
        # this module's children: its net is the generator's ``task_classifier``).
        object.__setattr__(self, "router", router)
        self.router_epochs = router_epochs
        self.memory = memory
        if memory is not None:
            self.parts.append(memory)
        self.train_widths, self.unseen_widths = train_widths, unseen_widths
        self.eval_fractions = eval_fractions
        self.rng = random.Random(seed)
        self.noise_gen = torch.Generator().manual_seed(seed)
        self.teacher: Weights | None = None
        self.old_targets: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        self.trained: dict[int, torch.Tensor] = {}  # task -> its full-width weights when it finished
        self.local_label: torch.Tensor | None = None  # class-incremental: global class -> output of this task
        self.info: dict = {}

    @property
    def generator(self) -> NeuMetaGenerator:
        return self.net.generator

    @property
    def infer_task(self) -> bool:
        return self.generator.infers_task

    # -- experience boundaries -----------------------------------------------------------------
    def before_experience(self, experience: TensorExperience) -> None:
        super().before_experience(experience)
        task = self.task = self._task_of(experience)
        embeddings = self.generator.inr.task_emb
        for k, emb in enumerate(embeddings):
            emb.requires_grad_(k == task)
        if self.task_init == "previous" and self.trained and task not in self.trained:
            # Start from the last task's network. It works from step one, but the regulariser then
            # holds the new task's outputs as firmly as the old one's: less plasticity in our runs.
            with torch.no_grad():
                embeddings[task].copy_(embeddings[max(self.trained)])
        self.info = {}
        with torch.no_grad():  # what the generator says for old tasks now, at every training width
            requests = [Request(k, w) for k in self.trained for w in self.train_widths]
            raws = self.generator.raw_many(requests) if requests else []
            self.old_targets = {(r.task, r.widths): flat(raw) for r, raw in zip(requests, raws)}
        self._row_targets = {}
        self.teacher = None
        wants_teacher = self.teachers == "every" or (self.teachers == "first" and not self.trained)
        if self.recon_weight > 0 and self.teacher_epochs > 0 and wants_teacher:
            self.teacher = self._train_teacher(experience)
            if self.recon_steps:
                self._fit_teacher()
        if self.router is not None:
            self._train_router(experience)

    def _train_router(self, experience: TensorExperience) -> None:
        """The task classifier learns the experience with ER-ACE on its memory (which already holds
        some of this experience's samples), at every width (``strategies.task_classifier``)."""
        t0 = time.perf_counter()
        device = self.generator.inr.stem.weight.device
        router = self.router
        router.train().net.requires_grad_(True)
        router.before_experience(experience)
        fit_module(router, experience, epochs=self.router_epochs, batch_size=self.batch_size,
                   seed=self.seed + self.teacher_data_seed_offset * experience.index,
                   accelerator="gpu" if device.type == "cuda" else "cpu")
        router.net.requires_grad_(False)
        x, y = self.memory.data["x"].to(device), self.memory.data["y"].to(device)
        self.generator.classifier_state = measure_widths(self.layout, router.net, x, y, self.generator.classes)
        self.info.update(router_seconds=time.perf_counter() - t0)

    def _task_of(self, experience: TensorExperience) -> int:
        """The generator's task for an experience: its task label, or (class-incremental) its
        position in the stream, with a new task and embedding the first time it is seen."""
        if not self.infer_task:
            return self.generator.check_task(experience.task_label)
        generator = self.generator
        if experience.index == len(generator.heads):
            generator.add_task(experience.classes)
        elif experience.index > len(generator.heads) or generator.classes[experience.index] != experience.classes:
            raise ConfigError(f"strategy=neumeta on a class-incremental stream learns experiences in order; "
                              f"experience {experience.index} came after {len(generator.heads)} learned ones.")
        lookup = torch.full((generator.n_classes,), -1, dtype=torch.long)
        lookup[experience.classes] = torch.arange(len(experience.classes))
        self.local_label = lookup
        return experience.index

    def _local(self, y: torch.Tensor) -> torch.Tensor:
        return self.local_label.to(y.device)[y] if self.infer_task else y

    def _train_teacher(self, experience: TensorExperience) -> Weights:
        t0 = time.perf_counter()
        device = self.generator.inr.stem.weight.device
        torch.manual_seed(self.seed + self.teacher_seed_offset * (experience.index + 1))
        net = self.layout.build(self.layout.at_fraction(self.teacher_width), self.generator.heads[self.task],
                                batchnorm=self.layout.batchnorm)
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        if self.infer_task:
            experience = dataclasses.replace(experience, y=self._local(experience.y))
        t_fit = time.perf_counter()
        fit_experience(net, experience, epochs=self.teacher_epochs,
                       optim=self.teacher_optim.for_experience(experience.index), batch_size=self.batch_size,
                       seed=self.seed + self.teacher_data_seed_offset * experience.index, accelerator=accelerator)
        self.info.update(teacher_fit_seconds=time.perf_counter() - t_fit)  # the fit alone: a teacher-width network's training
        net = widened(net.cpu().eval(), self.layout.widths, seed=self.seed + experience.index)
        weights = layer_weights(net)
        smoothed, _ = smooth(weights, self.tsp_seconds)
        self.info.update(teacher_seconds=time.perf_counter() - t0, tv_before=total_variation(weights),
                         tv_after=total_variation(smoothed))
        smoothed = [(w.to(device), b.to(device)) for w, b in smoothed]
        if not self.generator.calibrated:
            self.generator.calibrate(smoothed)
        return self.generator.unscale(smoothed)  # the raw outputs that would reproduce the teacher

    def _fit_teacher(self) -> None:
        """Warm start: reconstruction (and the old-task regulariser on ``reg_tasks`` sampled old
        tasks) only, no data; a step costs the same however many tasks came before."""
        t0 = time.perf_counter()
        params = [p for p in self.generator.parameters() if p.requires_grad]
        opt = self.optim.for_experience(self.experience_index).build(params)
        for _ in range(self.recon_steps):
            raws, _, penalty = self.step_weights(noise=self.coord_noise, drawn=False)
            loss = reconstruction(raws[0], self.teacher) + penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
            opt.step()
        with torch.no_grad():
            raw = self.generator.raw_many([Request(self.task, tuple(self.layout.widths))])[0]
            err = float(reconstruction(raw, self.teacher))
        self.net.version += 1
        self.info.update(recon_seconds=time.perf_counter() - t0, recon_error=err)

    def stage(self, task: int) -> None:
        """Stand where a step on ``task`` stands after tasks 0..task-1, without training anything: the
        old tasks' targets and the teacher are what the generator outputs now. For timing a step."""
        self.task = task
        for k, emb in enumerate(self.generator.inr.task_emb):
            emb.requires_grad_(k == task)
        with torch.no_grad():
            self.trained = {k: flat(self.generator.weights(k)) for k in range(task)}
            requests = [Request(k, w) for k in range(task) for w in self.train_widths]
            raws = self.generator.raw_many(requests) if requests else []
            self.old_targets = {(r.task, r.widths): flat(raw) for r, raw in zip(requests, raws)}
            full = self.generator.raw_many([Request(task, tuple(self.layout.widths))])[0]
            self.teacher = [(w.detach(), b.detach()) for w, b in full]
        self._row_targets = {}

    def epochs(self, configured: int) -> int:
        """The INR's epochs over the experience (``inr_epochs``; null: ``train.epochs``, as the teacher)."""
        return configured if self.inr_epochs is None else self.inr_epochs

    def train_batch_size(self, configured: int) -> int:
        """The INR's batch (``inr_batch_size``; null: ``train.batch_size``, as the teacher). A step's
        INR pass costs the same at any batch size, so larger batches spread it over more samples."""
        return configured if self.inr_batch_size is None else self.inr_batch_size

    def after_training(self, experience: TensorExperience) -> None:
        with torch.no_grad():
            self.trained[self.task] = flat(self.generator.weights(self.task)).detach()
        self.net.version += 1
        if self.generator.routing == "calibrated":
            self._calibrate()

    @torch.no_grad()
    def _calibrate(self) -> None:
        """Fit each experience network's scale and shift on the memory (which now holds this
        experience too), at full width: one softmax over all of them should be right."""
        generator = self.generator
        x, y = self.memory.sample(len(self.memory), self.device, fields=("x", "y"))
        logits = [generator.run(generator.weights(k), k, generator.layout.widths, x) for k in range(len(generator.heads))]
        with torch.enable_grad():
            scale, shift = fit_calibration([lg.cpu() for lg in logits], y.cpu(), generator.classes, generator.n_classes)
        generator.calibration = [[float(a), float(b)] for a, b in zip(scale, shift)]

    def report(self) -> StrategyReport:
        drift = self.weight_drift()
        info = {**self.info, "weight_drift": {str(k): v for k, v in drift.items()}}
        scalars = {f"drift/task{k}": v for k, v in drift.items()}
        info["stored_params"] = sum(p.numel() for p in self.generator.parameters())
        if self.memory is not None:  # samples stored, in replay's units
            info["memory_samples"] = len(self.memory)
        return StrategyReport(info=info, scalars=scalars)

    # -- state ---------------------------------------------------------------------------------
    def net_state(self) -> dict:
        return generator_state(self.generator)

    def load_net_state(self, state: dict) -> None:
        self.net.generator = generator_from_state(state).train()
        self.net.version += 1  # generated weights cached before are stale
        if self.router is not None:  # it trains the generator's task classifier, now the loaded one
            self.router.net = self.generator.task_classifier

    def extra_state(self) -> dict:
        state = {"rng": python_rng_state(self.rng), "noise_gen": self.noise_gen.get_state(),
                 "trained": dict(self.trained)}
        if self.router is not None:
            state["router"] = self.router.extra_state()
        return state

    def load_extra_state(self, state: dict) -> None:
        set_python_rng_state(state["rng"], self.rng)
        self.noise_gen.set_state(state["noise_gen"])
        self.trained = {int(k): v for k, v in state["trained"].items()}
        if self.router is not None:
            self.router.load_extra_state(state["router"])

    @torch.no_grad()
    def weight_drift(self) -> dict[int, float]:
        """L2 distance of each finished task's full-width generated weights from when it was trained."""
        return {k: float((flat(self.generator.weights(k)) - w.to(self.device)).norm()) for k, w in self.trained.items()}

    def plugins(self, settings: RunSettings) -> list[Plugin]:
        checkpoint = None if settings.run_dir is None else settings.run_dir / "generator.pt"
        return [*self.parts, WidthSweep(self.eval_fractions, self.unseen_fractions, samples=self.net.samples,
                                        noise=self.net.noise, eval_batch_size=settings.eval_batch_size,
                                        checkpoint=checkpoint)]

    @property
    def unseen_fractions(self) -> list[float]:
        top = self.layout.widths[0]
        return [w[0] / top for w in self.unseen_widths]

    # -- training ------------------------------------------------------------------------------
    def step_weights(self, noise: float, drawn: bool = True):
        """One step's generations: task t at full width (then, if ``drawn``, at the narrowest and at
        a random training width), and the old-task penalty on old tasks at full width and at one
        random training width. Returns the new task's raw outputs, their requests and the penalty."""
        task, full = self.task, tuple(self.layout.widths)
        widths = [full]
        if drawn:  # the sandwich rule (Yu & Huang 2019): the narrowest width and a random one
            narrower = [self.train_widths[0], self.rng.choice(self.train_widths)]
            if self.narrower_per_step == 1:  # one of the two, drawn: each is trained every other step on average
                narrower = [self.rng.choice(narrower)]
            widths += narrower
        requests = [Request(task, w, noise) for w in widths]
        # Old tasks at full width (where the new task's loss and reconstruction push hardest) and at
        # one drawn width: ``reg_tasks`` of them drawn per step (von Oswald et al.'s stochastic
        # regulariser), so a step costs the same however many tasks came before.
        reg_width = self.rng.choice(self.train_widths)
        tasks = self._regularised_tasks()
        old = [Request(k, w) for k in tasks for w in (full, reg_width)]
        fraction = self._reg_fraction_each(len(tasks))
        if fraction < 1 and old:  # a random part of each old network's queries: a second, smaller pass
            raws = self.generator.raw_many(requests, self.noise_gen)
            return raws, requests, self._sampled_penalty(old, fraction)
        raws = self.generator.raw_many(requests + old, self.noise_gen)  # one pass over everything
        return raws[: len(requests)], requests, self._old_task_penalty(raws[len(requests):], old)

    def _reg_fraction_each(self, n_tasks: int) -> float:
        """The part of each old network's queries the regulariser compares this step: ``reg_fraction``
        (``reg_budget: per_task``), or ``reg_fraction`` of one network's queries shared by the
        ``n_tasks`` old tasks (``shared``: a step costs the same however many tasks came before)."""
        if self.reg_budget == "shared" and n_tasks > 1:
            return self.reg_fraction / n_tasks
        return self.reg_fraction

    def _regularised_tasks(self) -> list[int]:
        old = sorted(self.trained)
        if not self.reg_tasks or len(old) <= self.reg_tasks:
            return old
        return sorted(self.rng.sample(old, self.reg_tasks))

    def _old_task_penalty(self, raws: list[Weights], requests: list[Request]) -> torch.Tensor | float:
        """von Oswald et al.'s output regulariser, on unit-scale raw outputs (mean over weights):
        each old task's outputs against what it generated at that width before this experience.
        The mean over the sampled old tasks is an unbiased estimate of the mean over all of them."""
        if not raws or not self.reg_weight:
            return 0.0
        reg = sum((flat(raw) - self.old_targets[(r.task, r.widths)]).pow(2).mean() for raw, r in zip(raws, requests))
        return self.reg_weight * reg / len(requests)

    def _sampled_penalty(self, requests: list[Request], fraction: float) -> torch.Tensor | float:
        """The same regulariser on a random ``fraction`` of each old network's queries (drawn
        afresh every step): the mean squared error over the sampled weights estimates the mean
        over all of them at that fraction of the INR's cost."""
        if not self.reg_weight:
            return 0.0
        rows, masks, targets = [], [], []
        for r in requests:
            key = (r.task, r.widths)
            if key not in self._row_targets:  # the stored flat outputs, laid out as raw_rows' matrix
                mask = self.generator.row_mask(r)
                padded = mask.new_zeros(mask.shape, dtype=self.old_targets[key].dtype)
                padded[mask] = self.old_targets[key]
                self._row_targets[key] = (mask, padded)
            mask, padded = self._row_targets[key]
            n = len(mask)
            i = torch.randperm(n, generator=self.noise_gen)[: max(1, math.ceil(fraction * n))]
            rows.append(i)  # on the CPU: raw_rows moves them to the INR's device
            i = i.to(mask.device)
            masks.append(mask[i])
            targets.append(padded[i])
        outs = self.generator.raw_rows(requests, rows)
        reg = sum(((o - t).pow(2) * m).sum() / m.sum() for o, t, m in zip(outs, targets, masks))
        return self.reg_weight * reg / len(requests)

    def compute_loss(self, batch) -> torch.Tensor:
        x, y, _ = batch
        y = self._local(y)
        raws, requests, penalty = self.step_weights(self.coord_noise)
        loss = 0.0
        # The batch is shuffled, so its first part is a random one. full_batch=0: the full width
        # learns from its reconstruction of the teacher alone (the teacher has seen the data).
        part = max(1, math.ceil(self.sandwich_batch * len(y)))
        parts = [math.ceil(self.full_batch * len(y)) if self.teacher is not None else len(y), part, part]
        for raw, request, n in zip(raws, requests, parts):  # full, then the narrower ones
            if n == 0:
                continue
            weights = self.generator.scale(raw, request)
            xs, ys = x[:n], y[:n]
            loss = loss + F.cross_entropy(self.generator.run(weights, self.task, request.widths, xs), ys)
        if self.teacher is not None:
            loss = loss + self.recon_weight * reconstruction(raws[0], self.teacher)
        if self.l2_weight:
            loss = loss + self.l2_weight * flat(raws[0]).pow(2).mean()
        return loss + penalty

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.net.version += 1
        return loss

    # -- deployment ----------------------------------------------------------------------------
    def generate(self, task: int, widths=None, *, fraction: float | None = None, budget: dict | None = None) -> nn.Module:
        """An ordinary ``nn.Module`` for ``task`` at the given widths / fraction / budget."""
        return self.generator.generate(task, widths, fraction=fraction, budget=budget, samples=self.net.samples,
                                       noise=self.net.noise)


REG_BUDGETS = ("per_task", "shared")  # how ``reg_fraction`` counts (``NeuMeta._reg_fraction_each``)


def _check(*, min_width, router_min_width, router_pool, layout_kind, coord_noise, recon_weight, l2_weight, reg_weight,
           reg_tasks, eval_samples, teacher_epochs,
           teachers, task_init, eval_fractions, inr_epochs, routing, router_epochs, router_distill,
           inr_batch_size, inr_lr, reg_fraction, sandwich_batch, full_batch, inr_precision, narrower_per_step,
           teacher_width, reg_budget) -> None:
    """Every strategy value a user can get wrong, as one-sentence errors (routing too on a
    task-incremental stream, where it plays no part: a typo there is still a typo)."""
    if not 0 < min_width <= 1:
        raise ConfigError(f"strategy.min_width must be in (0, 1], got {min_width}.")
    if router_min_width is not None and not 0 < router_min_width <= 1:
        raise ConfigError(f"strategy.router_min_width must be in (0, 1] (or null for min_width), got {router_min_width}.")
    if not (isinstance(router_pool, int) and router_pool >= 1):
        raise ConfigError(f"strategy.router_pool must be a positive integer (1: global average pooling), got {router_pool}.")
    if router_pool != 1 and layout_kind != "CNN":
        raise ConfigError(f"strategy.router_pool={router_pool} pools a CNN's feature map; {layout_kind} has none, "
                          "so leave it at 1 or use model=cnn.")
    for key, value in (("coord_noise", coord_noise), ("recon_weight", recon_weight), ("l2_weight", l2_weight),
                       ("reg_weight", reg_weight), ("reg_tasks", reg_tasks), ("teacher_epochs", teacher_epochs)):
        if value < 0:
            raise ConfigError(f"strategy.{key} must be non-negative, got {value}.")
    if inr_epochs is not None and inr_epochs < 1:
        raise ConfigError(f"strategy.inr_epochs must be at least 1 (or null for train.epochs), got {inr_epochs}.")
    if inr_batch_size is not None and inr_batch_size < 1:
        raise ConfigError(f"strategy.inr_batch_size must be at least 1 (or null for train.batch_size), "
                          f"got {inr_batch_size}.")
    if inr_lr is not None and not inr_lr > 0:
        raise ConfigError(f"strategy.inr_lr must be positive (or null for train.lr), got {inr_lr}.")
    if not 0 < reg_fraction <= 1:
        raise ConfigError(f"strategy.reg_fraction must be in (0, 1], got {reg_fraction}.")
    if reg_budget not in REG_BUDGETS:
        raise ConfigError(f"Unknown strategy.reg_budget '{reg_budget}'; valid budgets are: {', '.join(REG_BUDGETS)}.")
    if not 0 < teacher_width <= 1:
        raise ConfigError(f"strategy.teacher_width must be in (0, 1] (a fraction of the full width), got {teacher_width}.")
    if not 0 < sandwich_batch <= 1:
        raise ConfigError(f"strategy.sandwich_batch must be in (0, 1], got {sandwich_batch}.")
    if narrower_per_step not in (1, 2):
        raise ConfigError(f"strategy.narrower_per_step must be 1 or 2, got {narrower_per_step}.")
    if not 0 <= full_batch <= 1:
        raise ConfigError(f"strategy.full_batch must be in [0, 1], got {full_batch}.")
    if inr_precision not in PRECISIONS:
        raise ConfigError(f"Unknown strategy.inr_precision '{inr_precision}'; valid precisions are: "
                          f"{', '.join(PRECISIONS)}.")
    if routing not in ROUTINGS:
        raise ConfigError(f"Unknown strategy.routing '{routing}'; valid routings are: {', '.join(ROUTINGS)}.")
    if router_epochs < 1:
        raise ConfigError(f"strategy.router_epochs must be at least 1, got {router_epochs}.")
    if not router_distill >= 0:
        raise ConfigError(f"strategy.router_distill must be non-negative, got {router_distill}.")
    if eval_samples < 1:
        raise ConfigError(f"strategy.eval_samples must be at least 1, got {eval_samples}.")
    if teachers not in ("every", "first"):
        raise ConfigError(f"strategy.teachers must be 'every' or 'first', got '{teachers}'.")
    if task_init not in ("random", "previous"):
        raise ConfigError(f"strategy.task_init must be 'random' or 'previous', got '{task_init}'.")
    for f in eval_fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"strategy.eval_fractions must lie in (0, 1], got {f}.")


def widened(net: nn.Module, widths, seed: int = 0) -> nn.Module:
    """``net`` grown to ``widths`` by Net2Wider (``morph.widen``, copies of its units): the same
    function at full width, so that a teacher trained narrower still gives full-width targets.
    Every unit gets as many copies as the others (``copies="even"``): after smoothing, each unit
    becomes a run of equal neighbours, and the teacher's width samples one point of each run,
    so the targets there are the teacher's own units."""
    for layer, width in enumerate(widths):
        if net.widths[layer] < width:
            net = widen(net, layer, width, seed=seed + layer, copies="even").net
    return net


def training_widths(layout: TargetLayout, min_width: float, unseen: list[float]):
    """Width configurations sampled in training (uniformly scaled, first layer from
    ceil(min_width * W0) to W0 units) and the held-out ones (never sampled)."""
    all_widths = uniform_widths(layout, min_width)
    held = []
    for f in unseen:
        if not 0 < f < 1:
            raise ConfigError(f"strategy.widths_unseen must lie in (0, 1), got {f}.")
        held.append(layout.at_fraction(f))
    train = [w for w in all_widths if w not in held]
    if layout.widths not in train:
        raise ConfigError("The full width cannot be held out; remove 1.0 from strategy.widths_unseen.")
    return train, held
