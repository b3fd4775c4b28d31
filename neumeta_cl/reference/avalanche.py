"""Checking our strategies against Avalanche's: our naive / ewc / replay / si / mas / agem / er_ace /
der / gdumb next to Avalanche's Naive / EWC / Replay / SynapticIntelligence / MAS / AGEM / ER_ACE / DER
/ GDumb on the same stream, net, init and numbers. ``scripts/compare_avalanche.py`` is its command line.

Without ``--benchmark`` each method runs where it is meant to (``CASES``): naive, ewc, replay,
A-GEM, ER-ACE, DER++ and GDumb class-incremental on Split-Fashion-MNIST (memory of 500); SI and MAS
task-incremental on Split-Fashion-MNIST (one head per task); A-GEM also domain-incremental on
Permuted-Fashion-MNIST. ``max_acc_diff`` is over all of them.

What is shared, per seed:
- the stream: Avalanche trains and evaluates on ``build_stream(...).benchmark``, the very benchmark
  object our tensors are materialised from (same experiences, class order, samples);
- the network: our recipe builds the MLP (seeded), a hook deep-copies it before any training, and
  Avalanche trains that copy. ``b`` (accuracy before training) must then agree exactly on both
  sides; ``compare`` reports their largest difference as ``b_max_abs_diff``;
- the numbers: both sides read one composed config (SGD lr/momentum, batch size, epochs, eval batch
  size, EWC lambda/mode, replay buffer size/policy and memory batch size).
What is not shared: the order of the training mini-batches (each side's own shuffling) and which
buffered samples each replay step draws. That is the noise the seeds measure.

Output: a table (``format_table``: strategy | ours ACC | Avalanche ACC | diff | ours BWT |
Avalanche BWT), wall seconds per side, then ONE line of JSON (``json_line``, the script's last line
of stdout) with ``max_acc_diff`` (the largest |mean over seeds of ours - Avalanche| ACC, in accuracy
points) and per strategy ACC/BWT of both.
ACC and BWT follow DESIGN.md (BWT averages over T-1 experiences, the GEM paper's convention).

Avalanche-side choices, and why:
- Naive:  ``avalanche.training.Naive``.
- SI:     ``SynapticIntelligence(si_lambda, eps)`` (its Omega clip 0.001 is hard-coded: another
          ``strategy.clip`` is refused), run inside ``si_copies_weights`` (Avalanche's CPU aliasing
          fixed, FINDINGS 6) and with SGD's momentum reset at every experience (FINDINGS 7).
- MAS:    ``MAS(lambda_reg=mas_lambda, alpha)``.
- A-GEM:  ``AGEM(patterns_per_exp = buffer_size // n_experiences, sample_size)``. Avalanche's memory
          grows by that many per experience; ours is experience-balanced within ``buffer_size``
          (both hold ``buffer_size`` after the last experience; ours holds more before).
- ER-ACE: ``ER_ACE(mem_size=buffer_size, batch_size_mem)``; DER: ``DER(mem_size, batch_size_mem,
          alpha, beta)`` (``beta: null`` -> 0.0); GDumb: ``GDumb(mem_size)`` with ``train_epochs =
          strategy.epochs``. Avalanche's GDumb memory is a class-balanced reservoir, ours the paper's
          greedy sampler; on class-incremental streams both are a uniform sample of each class.
- EWC:    ``avalanche.training.EWC(ewc_lambda, mode)``; our ``online`` maps to Avalanche's
          ``online`` with ``decay_factor = strategy.decay``. Avalanche computes the Fisher with
          ``train_mb_size`` mini-batches; ours with ``strategy.fisher_batch_size`` (default: the
          train batch size), so a different fisher_batch_size is refused rather than compared.
- Replay: ``avalanche.training.Replay`` is exactly ``SupervisedTemplate`` + ``ReplayPlugin(mem_size)``
          with the experience-balanced buffer, and it does not forward ``storage_policy`` or
          ``batch_size_mem``. We therefore build ``Naive`` (= SupervisedTemplate) with
          ``ReplayPlugin(mem_size, batch_size_mem, storage_policy=ClassBalancedBuffer(mem_size,
          adaptive_size=True))`` (or ``ReservoirSamplingBuffer`` for ``policy=reservoir``).

FINDINGS (measured with the script; default stream unless said otherwise)
-------------------------------------------------------------------------
1. On the default Split-Fashion-MNIST stream the two agree. Mean ours - Avalanche ACC (points,
   mean ± std over seeds): seeds 0-2: naive +0.06 ± 0.09, ewc +0.00 ± 0.22, replay -0.16 ± 1.85;
   seeds 0-4: naive +0.20 ± 0.35, ewc +0.72 ± 1.43 (4 seeds, see 4.), replay -0.09 ± 1.36;
   replay over seeds 0-9: -0.13 ± 1.0 (standard error 0.3). Mean BWT agrees within 1 point.
   b is identical (0.0 points) on every run: same initial weights, same test data. Both sides are
   deterministic (a rerun prints the same numbers). Timing (2 cores, 1 thread): seed 0, all three
   strategies, 40 s in all; ours 9.2 s, Avalanche 21.4 s (2.3x) of training and evaluation.
2. Single seeds can differ by 2-3 points (replay seed 2: -2.1; ewc seed 4: +2.9). That is
   mini-batch-order noise, not a gap: Avalanche rerun on the same stream and init with another
   shuffle differs from itself by 0.9 points on average for replay (up to 2.1). For ewc seed 4,
   our module trained with 6 different data orders gives ACC 20.8-24.7, which brackets Avalanche's
   21.4-21.8. In class-incremental naive/EWC, ACC ~ R[T-1,T-1]/T plus whatever survives of one
   older experience, so a single entry (ewc seed 4: R[4,3] = 23.6 vs 9.3) moves ACC by ~3 points.
3. Differences checked and found not to matter:
   - SGD momentum: Avalanche keeps the optimizer state across experiences
     (make_optimizer(reset_optimizer_state=False)); our recipe builds a fresh optimizer each
     experience. With --avalanche-reset-optimizer the mean diffs (seeds 0-4) are ewc +0.42,
     replay +0.30: no measurable effect (momentum 0.9 forgets within ~10 of 94 steps).
   - Replay batches: Avalanche's ReplayDataLoader cycles a shuffled DataLoader over the buffer
     (500 = 128+128+128+116), ours draws a fresh random 128 per step. Same expectation.
   - EWC Fisher: bit-identical for the same weights (our diagonal_fisher against
     EWCPlugin.compute_importances on a split-digits experience: max |difference| 0.0). The
     penalty is the same too: lambda * sum F (theta - theta*)^2.
   - The learning-curve probe, which the comparison turns off: on or off, our numbers are the same.
4. EWC lambda=1000 with lr 0.01, momentum 0.9 was at the edge of stability (our default is now
   100). The penalty is a quadratic of curvature 2*lambda*F, and heavy-ball SGD is stable only if
   lr*2*lambda*F < 2(1+momentum) = 3.8, i.e. F < 0.19 at lambda 1000. At seed 3 the largest Fisher
   entry after experience 0 is 0.247, and BOTH implementations diverged in experience 1 (ours
   raises TrainingDiverged; left alone, Avalanche carries on with NaN weights and reports ~10%
   ACC; the DivergenceGuard below stops it as ours stops). Diverged seeds are listed and left out
   of the means.
5. Found with the script and fixed: our `class_balanced` buffer used to overwrite a recurring
   class's samples (domain-incremental streams), holding only the latest experience; replay on
   permuted_digits (--quick) scored 77.0 vs Avalanche's 92.8. It now keeps a reservoir per class
   across experiences, as Avalanche's ClassBalancedBuffer does: 93.03 vs 93.64 (seeds 0 1,
   -0.61 +- 0.94 points).
6. Avalanche 0.6's SI does nothing on the CPU. ``SynapticIntelligencePlugin.extract_weights`` stores
   ``param.detach().cpu().flatten()``: a copy on a CUDA device, a view of the live parameter on the
   CPU, so the step's start, the experience's start and the anchor all move with the weights;
   the path integral, Omega and the penalty are exactly 0 (``tests/test_baselines.py`` shows Omega
   all zeros as shipped, and equal to ours with ``si_copies_weights``). The comparison runs the
   fixed version; ``--avalanche-si-as-shipped`` runs the original.
7. SI with SGD momentum carried across experiences (Avalanche's default) diverged on the Avalanche
   side (task-incremental Split-FMNIST, seed 0, si_lambda 100: loss inf in experience 2); ours,
   which builds a fresh optimizer per experience, did not. With Avalanche's optimizer reset per
   experience the two agree (seed 0: 93.97 vs 93.36), so ``RESET_OPTIMIZER`` does that for SI.
   Likely mechanism (not instrumented): Omega is clipped from above only, and a weight that the
   old momentum pushes uphill and that ends near its start gets Omega = -w / (Delta^2 + 1e-7),
   large and negative, which turns its penalty into a concave quadratic.
8. A-GEM on class-incremental Split-FMNIST: per-seed differences -8.97, +0.01, +7.32 points, mean
   -0.55. ACC is the last experience's accuracy / 5 plus whether one old experience partially
   survives (Avalanche seed 0: R[4,0] = 41.7 vs ours 0.0; ours seed 2: R[4,2] = 32.1 vs 10.1),
   a coin toss per seed on both sides. Domain-incremental (permuted), where A-GEM protects old
   experiences, the two agree on every seed (+0.57, +0.78, +0.05). Checked equal: the projection
   (against ``AGEMPlugin.after_backward``), the reference loss. Differs by design: Avalanche's
   memory grows by buffer_size // T per experience, ours is buffer_size from the first.
9. DER++ has the largest mean gap, -1.66 +- 1.07 (ours lower on every seed: -0.45, -2.05, -2.49):
   within the target, and the three seeds cannot tell a small systematic gap from noise (replay's
   single seeds differ by up to 2 points). Equal by construction: the loss terms, one memory batch
   for both replay terms, logits stored after the experience in eval mode, class-balanced memory.
   Not shared: batch order, which memory rows each step draws (Avalanche cycles a shuffled loader
   over the memory, ours draws fresh rows per step), and the buffer's random keys.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_BENCHMARK = "split_fmnist"
QUICK_BENCHMARK = "split_digits"
# Digits has ~290 training samples per experience, so 1 epoch is 3 SGD steps. 30 epochs learn each
# experience to ~95-100%, where mini-batch order hardly matters (at 10 the diff noise is ~4 points).
QUICK_EPOCHS = 30

STRATEGIES = ("naive", "ewc", "replay", "si", "mas", "agem", "er_ace", "der", "gdumb")
# Where each method is compared when no --benchmark is given: the scenario it is meant for.
# label -> (strategy, benchmark, overrides). A-GEM also runs domain-incremental.
# SI's Avalanche side resets SGD's momentum at every experience, as ours does (see FINDINGS):
# with the momentum carried over, its unbounded-below Omega made Avalanche diverge.
RESET_OPTIMIZER = {"si"}
MEMORY_500 = ["strategy.buffer_size=500"]
CASES = {
    "naive": ("naive", DEFAULT_BENCHMARK, []),
    "ewc": ("ewc", DEFAULT_BENCHMARK, []),
    "replay": ("replay", DEFAULT_BENCHMARK, MEMORY_500),
    "si": ("si", DEFAULT_BENCHMARK, ["benchmark.scenario=task"]),
    "mas": ("mas", DEFAULT_BENCHMARK, ["benchmark.scenario=task", "strategy.mas_lambda=1.0"]),  # as measured
    "agem": ("agem", DEFAULT_BENCHMARK, MEMORY_500),
    "agem_permuted": ("agem", "permuted_fmnist", MEMORY_500),
    "er_ace": ("er_ace", DEFAULT_BENCHMARK, MEMORY_500),
    "der": ("der", DEFAULT_BENCHMARK, MEMORY_500),
    "gdumb": ("gdumb", DEFAULT_BENCHMARK, MEMORY_500),
}


def cases_for(strategies, benchmark: str | None) -> list[tuple[str, str, str, list[str]]]:
    """(label, strategy, benchmark, overrides) to run: each strategy in its own scenario(s), or all
    of them on ``benchmark`` when one is given."""
    if benchmark is not None:
        return [(name, name, benchmark, []) for name in strategies]
    return [(label, name, bm, list(ov)) for label, (name, bm, ov) in CASES.items() if name in strategies]


# ----------------------------------------------------------------------------------------------
# Our side: the real recipe, with a hook that keeps a copy of the freshly built network.


def _capture_init_hook():
    """A plugin that deep-copies the network at run start (after b, before any training)."""
    from neumeta_cl.protocol import Plugin

    class CaptureInit(Plugin):
        net = outcome = None

        def before_run(self, runner):
            self.net = copy.deepcopy(runner.net).cpu()

        def after_run(self, runner):  # also after a failure: R and b up to the failed experience
            self.outcome = runner.outcome

    return CaptureInit()


def config_overrides(benchmark: str, strategy: str, seed: int, epochs: int | None, ewc_lambda: float | None,
                     extra: list[str], device: str, output_dir: str, threads: int | None = None) -> list[str]:
    """Hydra overrides for one of our runs; `extra` (``--set``) comes last so it wins."""
    o = [f"benchmark={benchmark}", f"strategy={strategy}", f"seed={seed}", "logger.mode=disabled",
         f"output_dir={output_dir}", f"run_name=compare-{strategy}-s{seed}", "train.progress_bar=false",
         f"train.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
         # The learning-curve probe only adds evaluations (no RNG use, no training change): off, so
         # our wall time is train + the same evaluations Avalanche does.
         "metrics.lca_beta=0", "metrics.curve_every_n_steps=0"]
    if epochs is not None:
        o.append(f"train.epochs={epochs}")
    if threads is not None:  # run_continual sets torch's threads from the config: keep --threads in force
        o.append(f"train.threads={threads}")
    if ewc_lambda is not None and strategy == "ewc":
        o.append(f"strategy.ewc_lambda={ewc_lambda}")
    return o + list(extra)


def run_ours(cfg):
    """(R, b, wall seconds, initial net, divergence message or None) of one run of our recipe."""
    from neumeta_cl.errors import TrainingDiverged
    from neumeta_cl.run import run_continual

    capture = _capture_init_hook()
    t0 = time.perf_counter()
    diverged = None
    try:
        run_continual(cfg, plugins=[capture])
    except TrainingDiverged as e:
        diverged = str(e)
    seconds = time.perf_counter() - t0
    return np.asarray(capture.outcome.R), np.asarray(capture.outcome.b), seconds, capture.net, diverged


# ----------------------------------------------------------------------------------------------
# Avalanche's side.


def _avalanche_model(net, multi_head: bool):
    """Avalanche calls ``model(x)``, or ``model(x, task_labels)`` for a MultiTaskModule."""
    if not multi_head:
        return net  # our MLP's forward(x, t=None) is what Avalanche calls
    from avalanche.models import MultiTaskModule

    class TaskRouted(MultiTaskModule):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, task_labels):  # our multi-head net routes each sample itself
            if not torch.is_tensor(task_labels):
                task_labels = torch.full((len(x),), int(task_labels), dtype=torch.int64, device=x.device)
            return self.inner(x, task_labels)

    return TaskRouted(net)


class Diverged(RuntimeError):
    pass


def _divergence_guard():
    """Stops Avalanche's training at the first non-finite loss, as our ContinualModule does."""
    from avalanche.training.plugins import SupervisedPlugin

    class DivergenceGuard(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):  # loss is complete (EWC added its penalty before)
            if not math.isfinite(strategy.loss.item()):
                raise Diverged(f"The training loss became {strategy.loss.item()} at experience "
                               f"{strategy.clock.train_exp_counter}, step {strategy.clock.train_exp_iterations}.")

    return DivergenceGuard()


@contextlib.contextmanager
def si_copies_weights():
    """Avalanche 0.6's SI with its CPU aliasing fixed, for as long as the block runs.

    ``SynapticIntelligencePlugin.extract_weights`` stores ``param.detach().cpu().flatten()``: on a
    CUDA device that is a copy, on the CPU it is a *view of the live parameter*. Every snapshot
    (the step's start, the experience's start, the anchor) then moves with the weights, so on the
    CPU the path integral, Omega and the penalty are all exactly 0 and Avalanche's SI trains as
    Naive. The fix is the copy the GPU path already makes (``.clone()``). The static methods call
    each other through the class name, so the class attribute itself is patched (and restored).
    """
    from avalanche.training.plugins.synaptic_intelligence import SynapticIntelligencePlugin as SIP

    original = SIP.__dict__["extract_weights"]

    @torch.no_grad()
    def extract_weights(model, target, excluded_parameters):
        for name, param in SIP.allowed_parameters(model, excluded_parameters):
            target[name].data = param.detach().cpu().flatten().clone()

    SIP.extract_weights = staticmethod(extract_weights)
    try:
        yield
    finally:
        SIP.extract_weights = original


def build_avalanche_strategy(name: str, model, cfg, device: str):
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training import EWC, Naive
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
    from avalanche.training.storage_policy import ClassBalancedBuffer, ReservoirSamplingBuffer

    from neumeta_cl.errors import ConfigError
    from neumeta_cl.strategies import OptimConfig

    t, s = cfg.train, cfg.strategy
    optimizer = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay).build(model.parameters())
    common = dict(
        model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=t.batch_size, train_epochs=t.epochs, eval_mb_size=t.eval_batch_size, device=device,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]), plugins=[_divergence_guard()],
    )
    if name == "naive":
        return Naive(**common)
    if name == "ewc":
        if s.fisher_batch_size is not None and s.fisher_batch_size != t.batch_size:
            raise ConfigError("Avalanche's EWC computes the Fisher with train_mb_size mini-batches; "
                              "leave strategy.fisher_batch_size=null to compare.")
        decay = float(s.decay) if s.mode == "online" else None
        return EWC(ewc_lambda=float(s.ewc_lambda), mode=s.mode, decay_factor=decay, **common)
    if name == "replay":
        size = int(s.buffer_size)
        policy = (ClassBalancedBuffer(max_size=size, adaptive_size=True) if s.policy == "class_balanced"
                  else ReservoirSamplingBuffer(max_size=size))
        # ReplayPlugin calls the deprecated `update`, which is `post_adapt(strategy, strategy.experience)`
        # plus a warning forced to "always"; call post_adapt directly to keep the output readable.
        policy.update = lambda strategy, **kw: policy.post_adapt(strategy, strategy.experience)
        plugin = ReplayPlugin(mem_size=size, batch_size_mem=int(s.mem_batch_size or t.batch_size),
                              storage_policy=policy)
        common["plugins"].append(plugin)
        return Naive(**common)
    if name in ("si", "mas", "agem", "er_ace", "der", "gdumb"):
        return _memory_or_importance_strategy(name, common, cfg)
    raise ConfigError(f"No Avalanche counterpart for strategy '{name}'; choose among {', '.join(STRATEGIES)}.")


def _refuse(cond: bool, message: str) -> None:
    from neumeta_cl.errors import ConfigError

    if cond:
        raise ConfigError(message)


def _memory_or_importance_strategy(name: str, common: dict, cfg):
    """Avalanche's SI / MAS / AGEM / ER_ACE / DER / GDumb with our config's numbers.

    Settings Avalanche cannot express are refused rather than compared with something else."""
    from avalanche.training import AGEM, DER, ER_ACE, MAS, GDumb, SynapticIntelligence

    s, t = cfg.strategy, cfg.train
    mem_batch = int(s.get("mem_batch_size") or t.batch_size)
    if name == "si":
        _refuse(s.clip != 0.001, "Avalanche's SI clips Omega at 0.001 (hard-coded); leave strategy.clip=0.001 to compare.")
        return SynapticIntelligence(si_lambda=float(s.si_lambda), eps=float(s.eps), **common)
    if name == "mas":
        _refuse(s.importance_batch_size not in (None, t.batch_size),
                "Avalanche's MAS estimates importance with train_mb_size batches; leave strategy.importance_batch_size=null.")
        return MAS(lambda_reg=float(s.mas_lambda), alpha=float(s.alpha), **common)
    if name == "agem":
        # Avalanche's memory keeps patterns_per_exp samples of every experience (it grows); ours is
        # experience-balanced within buffer_size. Both hold buffer_size samples after the last experience.
        _refuse(s.policy != "experience_balanced", "Avalanche's AGEM keeps patterns per experience; leave "
                "strategy.policy=experience_balanced to compare.")
        per_exp = int(s.buffer_size) // int(cfg.benchmark.n_experiences)
        return AGEM(patterns_per_exp=per_exp, sample_size=int(s.sample_size), **common)
    # GDumb: our default is the paper's greedy sampler, Avalanche's a class-balanced reservoir; on a
    # class-incremental stream both hold a uniform sample of each class.
    allowed = ("class_balanced", "greedy_class_balanced") if name == "gdumb" else ("class_balanced",)
    _refuse(s.policy not in allowed, f"Avalanche's {name} memory is class-balanced; set strategy.policy to one of "
                                     f"{', '.join(allowed)} to compare.")
    if name == "er_ace":
        return ER_ACE(mem_size=int(s.buffer_size), batch_size_mem=mem_batch, **common)
    if name == "der":
        return DER(mem_size=int(s.buffer_size), batch_size_mem=mem_batch, alpha=float(s.alpha),
                   beta=0.0 if s.beta is None else float(s.beta), **common)
    common["train_epochs"] = int(s.epochs)  # GDumb trains its memory for its own number of epochs
    return GDumb(mem_size=int(s.buffer_size), **common)


_EXP_KEY = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


def _row(metrics: dict, T: int) -> np.ndarray:
    row = np.full(T, np.nan)
    for key, value in metrics.items():
        m = _EXP_KEY.match(key)
        if m:
            row[int(m.group(1))] = float(value)
    if np.isnan(row).any():
        raise RuntimeError(f"Avalanche reported no accuracy for some test experiences: {sorted(metrics)}")
    return row


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_avalanche(name: str, stream, net, cfg, device: str = "cpu", shuffle_seed: int = 0,
                  reset_optimizer: bool = False, patch_si: bool = True):
    """(R, b, wall seconds, divergence message or None) of Avalanche's strategy on ``stream.benchmark``."""
    bm = stream.benchmark
    T = stream.n_experiences
    model = _avalanche_model(net, stream.heads is not None)
    strategy = build_avalanche_strategy(name, model, cfg, device)
    seed_all(shuffle_seed)  # Avalanche's loaders and buffers draw from the global generators
    train_kwargs = {"reset_optimizer_state": True} if reset_optimizer else {}
    R = np.full((T, T), np.nan)
    t0 = time.perf_counter()
    b = _row(strategy.eval(bm.test_stream), T)
    diverged = None
    try:
        with si_copies_weights() if name == "si" and patch_si else contextlib.nullcontext():
            for i, exp in enumerate(bm.train_stream):
                strategy.train(exp, **train_kwargs)
                R[i] = _row(strategy.eval(bm.test_stream), T)
    except Diverged as e:
        diverged = str(e)
    return R, b, time.perf_counter() - t0, diverged


# ----------------------------------------------------------------------------------------------
# The comparison.


@dataclass
class Pair:
    """One strategy, one seed, both sides. A side that diverged has ``*_diverged`` set and no ACC/BWT."""

    strategy: str
    seed: int
    ours_R: np.ndarray
    ours_b: np.ndarray
    avl_R: np.ndarray
    avl_b: np.ndarray
    ours_seconds: float
    avl_seconds: float
    ours_diverged: str | None = None
    avl_diverged: str | None = None
    avl_repeats: list[dict] = field(default_factory=list)  # extra Avalanche runs (other shuffle seeds)
    avl_reset_optimizer: bool = False  # Avalanche's SGD momentum reset at every experience

    @property
    def ours(self):
        return summary(self.ours_R, self.ours_b, self.ours_diverged)

    @property
    def avl(self):
        return summary(self.avl_R, self.avl_b, self.avl_diverged)

    @property
    def complete(self) -> bool:
        return self.ours_diverged is None and self.avl_diverged is None


def summary(R, b, diverged=None) -> dict:
    """ACC, BWT, FWT in accuracy points; None for a run that diverged (its R has NaN rows)."""
    from neumeta_cl.metrics import average_accuracy, backward_transfer, forward_transfer

    if diverged is not None:
        return {"acc": None, "bwt": None, "fwt": None}
    return {"acc": 100 * average_accuracy(R), "bwt": 100 * backward_transfer(R), "fwt": 100 * forward_transfer(R, b)}


def _fmt(x, spec=".2f", missing="diverged"):
    return missing if x is None else format(x, spec)


def compare(benchmark: str | None = DEFAULT_BENCHMARK, strategies=STRATEGIES, seeds=(0,), epochs: int | None = None,
            ewc_lambda: float | None = None, extra: list[str] | None = None, device: str = "cpu",
            avalanche_repeats: int = 1, reset_optimizer: bool = False, threads: int | None = None, log=print,
            patch_si: bool = True) -> dict:
    """Run every (case, seed) on both sides; returns the result dict that the JSON line prints.
    ``benchmark=None``: each strategy in the scenario it is meant for (``CASES``).
    ``threads``: torch's CPU threads, both sides (our runs set them from the config as well).
    ``patch_si``: run Avalanche's SI with its CPU aliasing fixed (``si_copies_weights``)."""
    from neumeta_cl.config import load
    from neumeta_cl.run import build_stream_from

    if threads is not None:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", module="avalanche")
    warnings.filterwarnings("ignore", category=UserWarning)
    pairs: list[Pair] = []
    configs, overrides = {}, {}
    with tempfile.TemporaryDirectory(prefix="compare_avalanche-") as tmp:
        for seed in seeds:
            for label, name, bm, case_ov in cases_for(strategies, benchmark):
                ov = config_overrides(bm, name, seed, epochs, ewc_lambda, [*case_ov, *(extra or [])], device, tmp,
                                      threads)
                ov = [o.replace(f"run_name=compare-{name}-", f"run_name=compare-{label}-") for o in ov]
                cfg = load(ov)
                configs[label] = cfg
                overrides[label] = ov
                stream = build_stream_from(cfg)  # memoised: run_continual gets this same object
                ours_R, ours_b, ours_s, init, ours_div = run_ours(cfg)
                assert stream is build_stream_from(cfg), "the stream memo was evicted; Avalanche would see another stream"
                reset = reset_optimizer or label in RESET_OPTIMIZER
                avl_R, avl_b, avl_s, avl_div = run_avalanche(name, stream, copy.deepcopy(init), cfg, device, seed,
                                                             reset, patch_si)
                pair = Pair(label, seed, ours_R, ours_b, avl_R, avl_b, ours_s, avl_s, ours_div, avl_div)
                for r in range(1, avalanche_repeats):  # same stream and init, another mini-batch order
                    R, b, sec, div = run_avalanche(name, stream, copy.deepcopy(init), cfg, device, seed + 7919 * r,
                                                   reset, patch_si)
                    pair.avl_repeats.append({"shuffle_seed": seed + 7919 * r, **summary(R, b, div), "seconds": sec,
                                             "diverged": div})
                pair.avl_reset_optimizer = reset
                pairs.append(pair)
                log(f"  {label:13s} seed {seed}: ours ACC {_fmt(pair.ours['acc'], '6.2f')} ({ours_s:5.1f} s) | "
                    f"Avalanche ACC {_fmt(pair.avl['acc'], '6.2f')} ({avl_s:5.1f} s)"
                    + "".join(f" | Avalanche shuffle {x['shuffle_seed']} ACC {_fmt(x['acc'], '6.2f')}"
                              for x in pair.avl_repeats))
                for side, msg in (("ours", ours_div), ("Avalanche", avl_div)):
                    if msg:
                        log(f"    {side} diverged: {msg}")
    res = summarise(pairs, configs, benchmark or "per strategy", seeds, reset_optimizer)
    res["avalanche_si"] = "aliasing fixed (si_copies_weights)" if patch_si else "as shipped"
    res["_saved"] = {"pairs": [pair_to_dict(p) for p in pairs], "overrides": overrides,
                     "benchmark": benchmark or "per strategy", "reset_optimizer": reset_optimizer,
                     "avalanche_si": res["avalanche_si"]}
    return res


# ----------------------------------------------------------------------------------------------
# Saving and merging: seeds (or cases) run as separate processes, one table and JSON line for all.


def pair_to_dict(p: Pair) -> dict:
    arr = lambda a: np.asarray(a, dtype=float).tolist()  # noqa: E731  (NaN stays NaN: json allows it here)
    return {"strategy": p.strategy, "seed": p.seed, "ours_R": arr(p.ours_R), "ours_b": arr(p.ours_b),
            "avl_R": arr(p.avl_R), "avl_b": arr(p.avl_b), "ours_seconds": p.ours_seconds,
            "avl_seconds": p.avl_seconds, "ours_diverged": p.ours_diverged, "avl_diverged": p.avl_diverged,
            "avl_repeats": p.avl_repeats, "avl_reset_optimizer": p.avl_reset_optimizer}


def save(res: dict, path) -> None:
    """Everything ``merge`` needs to rebuild the comparison (``res["_saved"]``), as JSON."""
    from pathlib import Path

    Path(path).write_text(json.dumps(res["_saved"]))


def merge(paths) -> dict:
    """One result from several saved comparisons (e.g. one process per seed)."""
    from pathlib import Path

    from neumeta_cl.config import load

    pairs, overrides, saved = [], {}, []
    for path in paths:
        d = json.loads(Path(path).read_text())
        saved.append(d)
        overrides.update(d["overrides"])
        for x in d["pairs"]:
            pairs.append(Pair(x["strategy"], x["seed"], *(np.asarray(x[k]) for k in ("ours_R", "ours_b", "avl_R", "avl_b")),
                              x["ours_seconds"], x["avl_seconds"], x["ours_diverged"], x["avl_diverged"],
                              x["avl_repeats"], x["avl_reset_optimizer"]))
    order = list(CASES) + [k for k in overrides if k not in CASES]
    pairs.sort(key=lambda p: (order.index(p.strategy) if p.strategy in order else len(order), p.seed))
    configs = {label: load(ov) for label, ov in overrides.items()}
    configs = {k: configs[k] for k in dict.fromkeys(p.strategy for p in pairs)}
    seeds = sorted({p.seed for p in pairs})
    res = summarise(pairs, configs, saved[0]["benchmark"], seeds, saved[0]["reset_optimizer"])
    res["avalanche_si"] = saved[0]["avalanche_si"]
    res["merged_from"] = [str(p) for p in paths]
    return res


def _mean(xs):
    return float(np.mean(xs)) if len(xs) else None


def _std(xs):
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else None


def _points(a: np.ndarray):
    """Accuracies as points with 2 decimals; NaN (rows not reached) as None, so the JSON line stays strict JSON."""
    return [_points(r) for r in a] if a.ndim > 1 else [None if np.isnan(v) else round(100 * float(v), 2) for v in a]


TARGET_POINTS = 2.0  # the two implementations must agree within this many accuracy points


def summarise(pairs: list[Pair], configs: dict, benchmark, seeds, reset_optimizer) -> dict:
    from neumeta_cl.config import to_dict

    per = {}
    for name in dict.fromkeys(p.strategy for p in pairs):
        ps = [p for p in pairs if p.strategy == name]
        ok = [p for p in ps if p.complete]  # means and differences over seeds where both sides finished
        diffs = [p.ours["acc"] - p.avl["acc"] for p in ok]
        entry = {
            "ours_acc": _mean([p.ours["acc"] for p in ok]), "avalanche_acc": _mean([p.avl["acc"] for p in ok]),
            "acc_diff": _mean(diffs), "acc_diff_std": _std(diffs),
            "ours_bwt": _mean([p.ours["bwt"] for p in ok]), "avalanche_bwt": _mean([p.avl["bwt"] for p in ok]),
            "bwt_diff": _mean([p.ours["bwt"] - p.avl["bwt"] for p in ok]),
            "n_compared": len(ok),
            "diverged": [{"seed": p.seed, "side": side, "message": msg} for p in ps
                         for side, msg in (("ours", p.ours_diverged), ("avalanche", p.avl_diverged)) if msg],
            "ours_seconds": sum(p.ours_seconds for p in ps), "avalanche_seconds": sum(p.avl_seconds for p in ps),
            "b_max_abs_diff": 100 * float(max(np.abs(p.ours_b - p.avl_b).max() for p in ps)),
            "strategy_config": to_dict(configs[name].strategy),
            "benchmark": configs[name].benchmark.name, "scenario": configs[name].benchmark.scenario,
            "avalanche_reset_optimizer": any(p.avl_reset_optimizer for p in ps),
            "per_seed": [
                {"seed": p.seed, "ours_acc": p.ours["acc"], "avalanche_acc": p.avl["acc"],
                 "ours_bwt": p.ours["bwt"], "avalanche_bwt": p.avl["bwt"],
                 "ours_fwt": p.ours["fwt"], "avalanche_fwt": p.avl["fwt"],
                 "ours_seconds": p.ours_seconds, "avalanche_seconds": p.avl_seconds,
                 "ours_R": _points(p.ours_R), "avalanche_R": _points(p.avl_R), "b": _points(p.ours_b),
                 **({"avalanche_repeats": p.avl_repeats} if p.avl_repeats else {})}
                for p in ps
            ],
        }
        spread = [p.avl["acc"] - x["acc"] for p in ps for x in p.avl_repeats
                  if p.avl["acc"] is not None and x["acc"] is not None]
        if spread:  # Avalanche against itself: same stream and init, only the mini-batch order differs
            entry["avalanche_vs_avalanche_abs_acc_diff_mean"] = _mean(np.abs(spread))
        per[name] = entry
    done = [e for e in per.values() if e["acc_diff"] is not None]
    one_sided = [d for e in per.values() for d in e["diverged"]
                 if not any(x["seed"] == d["seed"] and x["side"] != d["side"] for x in e["diverged"])]
    max_diff = max((abs(e["acc_diff"]) for e in done), default=None)
    cfg = next(iter(configs.values()))
    t = cfg.train
    return {
        "benchmark": benchmark, "scenario": cfg.benchmark.scenario, "n_experiences": cfg.benchmark.n_experiences,
        "model": to_dict(cfg.model), "seeds": list(seeds), "epochs": t.epochs, "batch_size": t.batch_size,
        "optimizer": t.optimizer, "lr": t.lr, "momentum": t.momentum, "avalanche_reset_optimizer": reset_optimizer,
        "units": "accuracy points (x100); BWT averaged over T-1 (GEM paper)",
        "max_acc_diff": max_diff,
        "max_acc_diff_any_seed": max((abs(x["ours_acc"] - x["avalanche_acc"]) for e in per.values()
                                      for x in e["per_seed"] if x["ours_acc"] is not None
                                      and x["avalanche_acc"] is not None), default=None),
        "max_b_diff": max(e["b_max_abs_diff"] for e in per.values()),
        "target_points": TARGET_POINTS,
        "within_target": max_diff is not None and max_diff <= TARGET_POINTS and not one_sided,
        "one_sided_divergences": one_sided,
        "ours_seconds": sum(e["ours_seconds"] for e in per.values()),
        "avalanche_seconds": sum(e["avalanche_seconds"] for e in per.values()),
        "strategies": per,
    }


def format_table(res: dict) -> str:
    n = len(res["seeds"])
    head = ["strategy", "stream", "ours ACC", "Avalanche ACC", "diff (points)", "ours BWT", "Avalanche BWT", "ours s",
            "Avalanche s"]
    rows, notes = [], []
    for name, e in res["strategies"].items():
        diff = _fmt(e["acc_diff"], "+.2f", "n/a") + (f" ± {e['acc_diff_std']:.2f}" if e["acc_diff_std"] is not None else "")
        rows.append([name, f"{e['benchmark']} ({e['scenario']})", _fmt(e["ours_acc"], missing="n/a"), _fmt(e["avalanche_acc"], missing="n/a"), diff,
                     _fmt(e["ours_bwt"], missing="n/a"), _fmt(e["avalanche_bwt"], missing="n/a"),
                     f"{e['ours_seconds']:.1f}", f"{e['avalanche_seconds']:.1f}"])
        for d in e["diverged"]:
            notes.append(f"  {name} seed {d['seed']}: {d['side']} diverged ({d['message']}); seed left out of the means")
        if "avalanche_vs_avalanche_abs_acc_diff_mean" in e:
            notes.append(f"  {name}: Avalanche vs Avalanche (other mini-batch order only) differs by "
                         f"{e['avalanche_vs_avalanche_abs_acc_diff_mean']:.2f} ACC points on average")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    model = res["model"]
    arch = f"{model['name']} {'x'.join(map(str, model['widths']))}" if "widths" in model else model["name"]
    verdict = (f"max |ACC diff| {_fmt(res['max_acc_diff'], missing='n/a')} points "
               f"(largest single seed: {_fmt(res['max_acc_diff_any_seed'], missing='n/a')}); target <= "
               f"{res['target_points']:g}: {'MET' if res['within_target'] else 'NOT MET'}")
    out = [
        (f"{res['benchmark']} ({res['scenario']}-incremental" if res["benchmark"] != "per strategy"
         else "each strategy on the stream it is meant for (buffer 500 for the memory methods"
         ) + f", {res['n_experiences']} experiences), {arch}, "
        f"{res['epochs']} epoch(s)/experience, batch {res['batch_size']}, {res['optimizer']} lr {res['lr']} "
        f"momentum {res['momentum']}, seeds {' '.join(map(str, res['seeds']))}",
        "ACC/BWT in accuracy points" + (", mean over seeds; diff: mean ± std over seeds" if n > 1 else "")
        + "; seconds: wall, summed over seeds.",
        line(head), "|-" + "-|-".join("-" * w for w in widths) + "-|", *(line(r) for r in rows),
        f"wall seconds: ours {res['ours_seconds']:.1f}, Avalanche {res['avalanche_seconds']:.1f} "
        f"(Avalanche/ours {res['avalanche_seconds'] / max(res['ours_seconds'], 1e-9):.1f}x)",
        verdict,
        f"b (accuracy before training) differs by at most {res['max_b_diff']:.2g} points: "
        + ("identical initial weights and test data." if res["max_b_diff"] == 0
           else "NOT identical, so the initial-weight copy or the test data differ."),
    ]
    return "\n".join(out + (["notes:", *notes] if notes else []))


def rounded(x, digits: int = 4):
    """Floats rounded for the JSON line (accuracy points to 1e-4, seconds to 0.1 ms)."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if 0 < abs(x) < 1e-3 else round(x, digits)  # eps=1e-7 stays 1e-7
    if isinstance(x, dict):
        return {k: rounded(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rounded(v, digits) for v in x]
    return x


def json_line(res: dict) -> str:
    """The result as one line of strict JSON, floats rounded (the last line the script prints)."""
    return json.dumps(rounded({k: v for k, v in res.items() if k != "_saved"}), allow_nan=False, separators=(",", ":"))
