"""Where NeuMeta's training time goes, against the individual networks it replaces.

    python scripts/profile_neumeta.py                      # neumeta_widths' settings, 1 thread
    python scripts/profile_neumeta.py strategy.reg_tasks=1 # any override of that experiment

Times, on real Split-Fashion-MNIST batches (task-incremental, CNN [32, 64]): one training step of an
individual network at each evaluated width, and NeuMeta's training step and warm-up step with
0 to T-1 old tasks, split into the INR (generating the weights, forward and backward) and the rest
(the generated networks on the batch). From them and the steps per experience it estimates both
sides' training time for one seed in units of a full-width network's step. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("WANDB_SILENT", "true")


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)

    import torch

    from neumeta_cl.config import load, to_dict
    from neumeta_cl.experiment import load_experiment
    from neumeta_cl.hypernet.generator import Request
    from neumeta_cl.nets import build_model
    from neumeta_cl.run import build_stream_from
    from neumeta_cl.strategies import OptimConfig, build_strategy
    from neumeta_cl.strategies.neumeta import flat

    torch.set_num_threads(args.threads)
    spec = load_experiment("neumeta_widths")
    cfg = load([*spec.overrides, "strategy=neumeta", *args.overrides])
    stream = build_stream_from(cfg)
    net = build_model(to_dict(cfg.model), stream.input_shape, stream.n_classes, stream.heads)
    t = cfg.train
    optim = OptimConfig(t.optimizer, t.lr, t.momentum, t.weight_decay, t.lr_schedule)
    module = build_strategy(to_dict(cfg.strategy), net, optim, t.batch_size, cfg.seed)
    gen, layout = module.generator, module.layout
    exp = stream.train[0]
    x, y, tl = exp.x[: t.batch_size], exp.y[: t.batch_size], exp.t[: t.batch_size]
    steps_per_epoch = -(-len(exp.y) // t.batch_size)
    inr_batch = module.train_batch_size(int(t.batch_size))
    inr_steps_per_epoch = -(-len(exp.y) // inr_batch)
    xb, yb, tb = exp.x[:inr_batch], exp.y[:inr_batch], exp.t[:inr_batch]
    T = stream.n_experiences
    loss_fn = torch.nn.functional.cross_entropy

    # An individual network's step at each evaluated width (the denominator of train_time_ratio).
    fractions = sorted({*map(float, cfg.strategy.eval_fractions), *map(float, cfg.strategy.widths_unseen)})
    individual = {}
    for f in fractions:
        ind = layout.build(layout.at_fraction(f), stream.heads[0], batchnorm=layout.batchnorm)
        opt = optim.build(list(ind.parameters()))

        def step(ind=ind, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss_fn(ind(x), y).backward()
            opt.step()
        individual[f] = timed(step, args.repeat)
    unit = individual[1.0]

    inr_params = [p for p in gen.parameters() if p.requires_grad]
    inr_opt = optim.build(inr_params)
    rows = []
    for k in range(T):  # task k, with k old tasks
        module.task = k
        module.trained = {j: None for j in range(k)}
        with torch.no_grad():
            reqs = [Request(j, w) for j in range(k) for w in module.train_widths]
            module.old_targets = {(r.task, r.widths): flat(raw) for r, raw in zip(reqs, gen.raw_many(reqs) if reqs else [])}
            module.teacher = [(w.detach(), b.detach()) for w, b in gen.raw_many([Request(k, layout.widths)])[0]]

        def train_step():
            inr_opt.zero_grad(set_to_none=True)
            module.compute_loss((xb, yb, tb)).backward()
            inr_opt.step()

        def inr_only(drawn=True):  # the same INR pass and backward, without the generated networks
            inr_opt.zero_grad(set_to_none=True)
            raws, _, penalty = module._generate(module.coord_noise, drawn=drawn)
            (sum(flat(r).pow(2).mean() for r in raws) + penalty).backward()
            inr_opt.step()
        step_s, inr_s = timed(train_step, args.repeat), timed(inr_only, args.repeat)
        warm_s = timed(lambda: inr_only(False), args.repeat)
        rows.append({"old_tasks": k, "step": step_s / unit, "inr": inr_s / unit, "nets": (step_s - inr_s) / unit,
                     "warmup_step": warm_s / unit})

    epochs = module.epochs(int(t.epochs))
    teacher = T * module.teacher_epochs * steps_per_epoch
    warmup = sum(r["warmup_step"] for r in rows) * module.recon_steps
    inr_training = sum(r["step"] for r in rows) * epochs * inr_steps_per_epoch
    individuals = sum(individual.values()) / unit * T * int(t.epochs) * steps_per_epoch
    print(f"unit: one full-width CNN {list(layout.widths)} step on a batch of {t.batch_size}, "
          f"{unit * 1e3:.1f} ms at {args.threads} thread(s)")
    print("individual step by width: " + ", ".join(f"{f:g}: {s / unit:.2f}" for f, s in individual.items()))
    print(f"NeuMeta's steps: batch {inr_batch}, {inr_steps_per_epoch} per epoch, {epochs} epoch(s); "
          f"{module.recon_steps} warm-up steps per experience")
    print(f"{'old tasks':>9} | {'step':>6} | {'INR':>6} | {'nets':>6} | {'warm-up step':>12}")
    for r in rows:
        print(f"{r['old_tasks']:>9} | {r['step']:6.2f} | {r['inr']:6.2f} | {r['nets']:6.2f} | {r['warmup_step']:12.2f}")
    total = teacher + warmup + inr_training
    print(f"one seed, in units: teachers {teacher:.0f}, warm-up {warmup:.0f}, INR training {inr_training:.0f}; "
          f"NeuMeta {total:.0f} against the individual networks' {individuals:.0f}: ratio {total / individuals:.2f}")
    out = {"unit_ms": unit * 1e3, "individual_steps": {str(f): s / unit for f, s in individual.items()},
           "steps": rows, "teachers": teacher, "warmup": warmup, "inr_training": inr_training,
           "individuals": individuals, "estimated_ratio": total / individuals}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
    sys.exit(0)
