"""Where NeuMeta's training time goes, against the individual networks it replaces.

On real batches of ``neumeta_widths``' stream (task-incremental, CNN) it times one training step of
an individual network at each evaluated width, and NeuMeta's training step and warm-up step with
0 to T-1 old tasks, split into the INR pass (generating the weights, forward and backward) and the
rest (the generated networks on the batch). From those and the steps per experience it estimates
both sides' training time for one seed, in units of one full-width network's step.
"""

from __future__ import annotations

import statistics
import time


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def estimate(rows: list[dict], individual: dict[float, float], *, taught: list[int], epochs: int, inr_epochs: int,
             steps_per_epoch: int, inr_steps_per_epoch: int, teacher_epochs: int, recon_steps: int,
             teacher_step: float = 1.0) -> dict:
    """One seed's training in units of a full-width step (``individual[1.0] == 1``): the teachers
    (for the tasks in ``taught``; a step of theirs costs ``teacher_step``, 1 at full width) and their
    warm-up steps, and every task's INR epochs (``rows[k]``: a step with k old tasks), against an
    individual network per task and width trained for ``epochs``."""
    n_tasks = len(rows)
    teachers = len(taught) * teacher_epochs * steps_per_epoch * teacher_step
    warmup = sum(rows[k]["warmup_step"] for k in taught) * recon_steps
    inr_training = sum(r["step"] for r in rows) * inr_epochs * inr_steps_per_epoch
    individuals = sum(individual.values()) * n_tasks * epochs * steps_per_epoch
    total = teachers + warmup + inr_training
    return {"teachers": teachers, "warmup": warmup, "inr_training": inr_training, "individuals": individuals,
            "estimated_ratio": total / individuals}


def measure(overrides=(), threads: int = 1, repeat: int = 10, quick: bool = False) -> dict:
    import torch

    from neumeta_cl.config import load, to_dict
    from neumeta_cl.experiment import load_experiment
    from neumeta_cl.nets import build_model
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies import OptimConfig, build_strategy
    from neumeta_cl.strategies.neumeta import flat, reconstruction
    from neumeta_cl.studies.neumeta_widths import QUICK

    torch.set_num_threads(threads)
    spec = load_experiment("neumeta_widths")
    cfg = load([*spec.overrides, *spec.axis("strategy").overrides_of("neumeta"), *(QUICK if quick else []), *overrides])
    stream = build_stream_from(cfg)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    t = cfg.train
    optim = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay, t.lr_schedule)
    module = build_strategy(to_dict(cfg.strategy), net, optim, t.batch_size, cfg.seed)
    layout = module.layout
    exp = stream.train[0]
    x, y = exp.x[: t.batch_size], exp.y[: t.batch_size]
    inr_batch = module.train_batch_size(int(t.batch_size))
    batch = (exp.x[:inr_batch], exp.y[:inr_batch], exp.t[:inr_batch])
    loss_fn = torch.nn.functional.cross_entropy

    # An individual network's step at each evaluated width (the denominator of train_time_ratio).
    fractions = sorted({*map(float, cfg.strategy.eval_fractions), *map(float, cfg.strategy.widths_unseen)})
    teacher_width = float(cfg.strategy.teacher_width)
    seconds = {}
    for f in sorted({*fractions, teacher_width}):
        ind = layout.build(layout.at_fraction(f), stream.heads[0], batchnorm=layout.batchnorm)
        opt = optim.build(list(ind.parameters()))

        def step(ind=ind, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss_fn(ind(x), y).backward()
            opt.step()
        seconds[f] = timed(step, repeat)
    unit = seconds[1.0]
    teacher_step = seconds[teacher_width] / unit
    seconds = {f: seconds[f] for f in fractions}

    params = [p for p in module.generator.parameters() if p.requires_grad]
    opt = optim.build(params)

    def run(loss_of):
        def go():
            opt.zero_grad(set_to_none=True)
            loss_of().backward()
            opt.step()
        return timed(go, repeat) / unit

    def inr_pass():  # the training step's INR pass and backward, without the generated networks
        raws, _, penalty = module.step_weights(module.coord_noise)
        return sum(flat(r).pow(2).mean() for r in raws) + penalty

    def warmup_step():
        raws, _, penalty = module.step_weights(module.coord_noise, drawn=False)
        return reconstruction(raws[0], module.teacher) + penalty

    rows = []
    for k in range(stream.n_experiences):  # task k, with k old tasks
        module.stage(k)
        step, inr = run(lambda: module.compute_loss(batch)), run(inr_pass)
        rows.append({"old_tasks": k, "step": step, "inr": inr, "nets": step - inr, "warmup_step": run(warmup_step)})
    n = len(exp.y)
    out = {"unit_ms": unit * 1e3, "threads": threads, "widths": list(layout.widths), "batch_size": int(t.batch_size),
           "inr_batch_size": inr_batch, "recon_steps": module.recon_steps,
           "inr_epochs": module.epochs(int(t.epochs)), "individual_steps": {str(f): s / unit for f, s in seconds.items()},
           "steps": rows}
    has_teacher = module.recon_weight > 0 and module.teacher_epochs > 0
    taught = ([] if not has_teacher else list(range(len(rows))) if module.teachers == "every" else [0])
    out.update(estimate(rows, {f: s / unit for f, s in seconds.items()}, taught=taught,
                        epochs=int(t.epochs), inr_epochs=out["inr_epochs"], steps_per_epoch=-(-n // int(t.batch_size)),
                        inr_steps_per_epoch=-(-n // inr_batch), teacher_epochs=module.teacher_epochs,
                        recon_steps=module.recon_steps, teacher_step=teacher_step))
    return out


def render(out: dict) -> str:
    lines = [f"unit: one full-width CNN {out['widths']} step on a batch of {out['batch_size']}, "
             f"{out['unit_ms']:.1f} ms at {out['threads']} thread(s)",
             "individual step by width: " + ", ".join(f"{float(f):g}: {s:.2f}" for f, s in out["individual_steps"].items()),
             f"NeuMeta's steps: batch {out['inr_batch_size']}, {out['inr_epochs']} epoch(s); "
             f"{out['recon_steps']} warm-up steps per experience",
             f"{'old tasks':>9} | {'step':>6} | {'INR':>6} | {'nets':>6} | {'warm-up step':>12}"]
    for r in out["steps"]:
        lines.append(f"{r['old_tasks']:>9} | {r['step']:6.2f} | {r['inr']:6.2f} | {r['nets']:6.2f} | {r['warmup_step']:12.2f}")
    total = out["teachers"] + out["warmup"] + out["inr_training"]
    lines.append(f"one seed, in units: teachers {out['teachers']:.0f}, warm-up {out['warmup']:.0f}, INR training "
                 f"{out['inr_training']:.0f}; NeuMeta {total:.0f} against the individual networks' "
                 f"{out['individuals']:.0f}: ratio {out['estimated_ratio']:.2f}")
    return "\n".join(lines)
