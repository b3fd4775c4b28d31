"""Tests for neumeta_cl.metrics: hand-computed values, the literal DESIGN.md formulas, and
agreement with Avalanche's own BWT / forward-transfer / forgetting on a real Avalanche run."""

import math
import random

import numpy as np
import pytest
import torch

from neumeta_cl.metrics import (
    CONVENTIONS,
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    gem_code_convention,
    learning_curve_area,
    seconds_to_fraction,
    steps_to_fraction,
    summarize,
)

# ---------------------------------------------------------------------------------------------
# Hand-computed 3x3 example (T = 3)
# ---------------------------------------------------------------------------------------------

R3 = np.array(
    [
        [0.90, 0.20, 0.10],
        [0.70, 0.80, 0.30],
        [0.60, 0.50, 0.95],
    ]
)
B3 = np.array([0.10, 0.15, 0.05])


def test_hand_computed_3x3():
    # ACC = (0.60 + 0.50 + 0.95) / 3
    assert average_accuracy(R3) == pytest.approx(2.05 / 3, abs=1e-12)
    # BWT = ((0.60 - 0.90) + (0.50 - 0.80)) / 2
    assert backward_transfer(R3) == pytest.approx(-0.30, abs=1e-12)
    # FWT = ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.20 - 0.15) + (0.30 - 0.05)) / 2
    assert forward_transfer(R3, B3) == pytest.approx(0.15, abs=1e-12)
    # F: j=0: max(0.90, 0.70) - 0.60 = 0.30; j=1: max(0.20, 0.80) - 0.50 = 0.30
    assert forgetting(R3) == pytest.approx(0.30, abs=1e-12)


def test_gem_code_convention_is_T_minus_1_over_T():
    # GEM's released code averages over all T = 3 terms (one of them 0): 2/3 of the paper value.
    assert backward_transfer(R3, convention="gem_code") == pytest.approx(-0.20, abs=1e-12)
    assert forward_transfer(R3, B3, convention="gem_code") == pytest.approx(0.10, abs=1e-12)
    assert gem_code_convention(-0.30, 3) == pytest.approx(-0.20, abs=1e-12)
    # Literal GEM-code computation: mean of the length-T vectors bwt[t], fwt[t] (fwt[0] = 0).
    T = R3.shape[0]
    bwt_vec = R3[T - 1] - np.diag(R3)
    fwt_vec = np.array([0.0] + [R3[t - 1, t] - B3[t] for t in range(1, T)])
    assert backward_transfer(R3, convention="gem_code") == pytest.approx(bwt_vec.mean(), abs=1e-12)
    assert forward_transfer(R3, B3, convention="gem_code") == pytest.approx(fwt_vec.mean(), abs=1e-12)
    with pytest.raises(ValueError, match="paper, gem_code"):
        backward_transfer(R3, convention="gem")
    with pytest.raises(ValueError, match="T must be a positive integer"):
        gem_code_convention(0.1, 0)
    assert CONVENTIONS == ("paper", "gem_code")


def test_forgetting_max_includes_rows_before_j_and_excludes_last_row():
    # Column 1 peaks at l=0 < j=1 (0.70 before experience 1 was trained, 0.60 after): the literal
    # max over all l < T-1 takes 0.70. j=0: max(0.9, 0.8) - 0.5 = 0.4; j=1: 0.7 - 0.4 = 0.3.
    R = np.array([[0.9, 0.7, 0.1], [0.8, 0.6, 0.3], [0.5, 0.4, 0.9]])
    assert forgetting(R) == pytest.approx(0.35, abs=1e-12)
    # Restricting to l >= j would give (0.4 + 0.2) / 2 = 0.30; -BWT gives ((0.9-0.5)+(0.6-0.4))/2.
    assert -backward_transfer(R) == pytest.approx(0.30, abs=1e-12)
    # The final row is not a candidate for the max, so improvement shows as negative forgetting.
    assert forgetting([[0.5, 0.0], [0.9, 0.8]]) == pytest.approx(-0.4, abs=1e-12)


def _literal_metrics(R, b):
    """DESIGN.md's formulas as explicit loops, to check the vectorised code against."""
    T = len(R)
    acc = sum(R[T - 1][j] for j in range(T)) / T
    bwt = sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)
    fwt = sum(R[j - 1][j] - b[j] for j in range(1, T)) / (T - 1)
    f = sum(max(R[l][j] - R[T - 1][j] for l in range(T - 1)) for j in range(T - 1)) / (T - 1)
    return {"acc": acc, "bwt": bwt, "fwt": fwt, "forgetting": f}


@pytest.mark.parametrize("T", [2, 3, 4, 7])
def test_matches_literal_formulas_on_random_matrices(T):
    rng = np.random.default_rng(T)
    R = rng.uniform(0, 1, size=(T, T))
    b = rng.uniform(0, 0.2, size=T)
    got = summarize(R, b)
    want = _literal_metrics(R.tolist(), b.tolist())
    assert set(got) == {"acc", "bwt", "fwt", "forgetting"}
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
        assert type(got[k]) is float
    # F >= -BWT always (l = j is one of the candidates of the max).
    assert got["forgetting"] >= -got["bwt"] - 1e-12


def test_single_experience_is_nan_except_acc():
    R, b = [[0.7]], [0.1]
    assert average_accuracy(R) == pytest.approx(0.7)
    assert math.isnan(backward_transfer(R))
    assert math.isnan(backward_transfer(R, convention="gem_code"))
    assert math.isnan(forward_transfer(R, b))
    assert math.isnan(forgetting(R))
    s = summarize(R, b)
    assert s["acc"] == pytest.approx(0.7) and all(math.isnan(s[k]) for k in ("bwt", "fwt", "forgetting"))


def test_summarize_without_baseline_and_with_convention():
    s = summarize(R3)
    assert math.isnan(s["fwt"]) and s["bwt"] == pytest.approx(-0.30, abs=1e-12)
    s = summarize(R3, B3, convention="gem_code")
    assert s["bwt"] == pytest.approx(-0.20, abs=1e-12) and s["fwt"] == pytest.approx(0.10, abs=1e-12)
    assert s["forgetting"] == pytest.approx(0.30, abs=1e-12)  # no convention for F


def test_torch_inputs_give_python_floats():
    R = torch.tensor(R3, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(B3, dtype=torch.float32)
    s = summarize(R, b)
    assert all(type(v) is float for v in s.values())
    assert s["bwt"] == pytest.approx(-0.30, abs=1e-6)
    assert s["fwt"] == pytest.approx(0.15, abs=1e-6)


@pytest.mark.parametrize(
    "R",
    [np.zeros((2, 3)), np.zeros(3), np.zeros((2, 2, 2)), np.zeros((0, 0)), [[0.1, 0.2], [0.3]]],
    ids=["non-square", "1-D", "3-D", "empty", "ragged"],
)
def test_bad_matrix_shapes_raise(R):
    for fn in (average_accuracy, backward_transfer, forgetting, lambda R: forward_transfer(R, [0, 0])):
        with pytest.raises(ValueError, match="R must be"):
            fn(R)


def test_bad_baseline_shape_raises():
    with pytest.raises(ValueError, match="b must be a vector of length T=3"):
        forward_transfer(R3, [0.1, 0.2])
    with pytest.raises(ValueError, match="b must be a vector of length T=3"):
        forward_transfer(R3, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="b must be a vector of length T=3"):
        summarize(R3, np.zeros(4))


# ---------------------------------------------------------------------------------------------
# Adaptation speed
# ---------------------------------------------------------------------------------------------


def test_learning_curve_area():
    z = [0.0, 0.2, 0.4, 0.6]
    assert learning_curve_area(z, beta=3) == pytest.approx(0.3, abs=1e-12)  # (0+.2+.4+.6)/4
    assert learning_curve_area(z, beta=2) == pytest.approx(0.2, abs=1e-12)  # (0+.2+.4)/3
    assert learning_curve_area(z, beta=0) == pytest.approx(0.0, abs=1e-12)  # Z_0 only
    # Values after Z_beta are ignored: default beta=10 -> mean of the first 11.
    long = np.arange(20) / 100.0
    assert learning_curve_area(long) == pytest.approx(0.05, abs=1e-12)  # mean(0..10)/100
    # Shorter than beta+1: mean of what exists (beta_eff = len(z)-1), no padding.
    assert learning_curve_area(z, beta=10) == pytest.approx(0.3, abs=1e-12)
    assert learning_curve_area(torch.tensor([0.5, 1.0]), beta=1) == pytest.approx(0.75, abs=1e-7)


@pytest.mark.parametrize("z, beta", [([], 10), ([[0.1, 0.2]], 1), ([0.1], -1), ([0.1], 2.5), ([0.1], True)])
def test_learning_curve_area_rejects_bad_input(z, beta):
    with pytest.raises(ValueError):
        learning_curve_area(z, beta=beta)


def test_steps_and_seconds_to_fraction():
    steps = [0, 10, 20, 30, 40]
    seconds = [0.0, 1.5, 3.0, 4.5, 6.0]
    accs = [0.1, 0.5, 0.76, 0.8, 0.8]
    # 0.95 * 0.8 = 0.76: reached at step 20, not 30.
    assert steps_to_fraction(steps, accs, final=0.8) == 20
    assert steps_to_fraction(steps, accs) == 20  # final defaults to the last accuracy
    # ... the last, not the best: 0.95 * 0.62 = 0.589 is first reached at step 10 (0.6).
    assert steps_to_fraction([0, 10, 20, 30], [0.1, 0.6, 0.9, 0.62]) == 10
    assert seconds_to_fraction(seconds, accs, final=0.8) == pytest.approx(3.0)
    assert steps_to_fraction(steps, accs, final=0.8, fraction=1.0) == 30
    assert steps_to_fraction(steps, accs, final=0.9, fraction=1.0) is None
    assert seconds_to_fraction(seconds, accs, final=0.9, fraction=1.0) is None
    # Equal to the threshold up to float rounding counts: 0.95 * 0.202 == 0.19190000000000002.
    assert steps_to_fraction([0, 5], [0.1919, 0.202]) == 0
    assert steps_to_fraction([0, 5], [63.08, 66.4]) == 0  # percentages: 0.95 * 66.4 > 63.08
    assert steps_to_fraction([0, 5], [0.1918, 0.202]) == 5
    # Already there before training (forward transfer): step 0.
    assert steps_to_fraction(steps, [0.95, 0.5, 0.7, 0.9, 0.96]) == 0  # 0.95 >= 0.912
    # First crossing counts even if the curve dips afterwards.
    assert steps_to_fraction(steps, [0.0, 0.96, 0.3, 0.5, 1.0]) == 10
    assert type(steps_to_fraction(np.array(steps), accs)) is int
    assert type(seconds_to_fraction(np.array(seconds), accs)) is float


@pytest.mark.parametrize(
    "steps, accs, fraction, match",
    [
        ([0, 10], [0.1], 0.95, "equal length"),
        ([], [], 0.95, "non-empty"),
        ([0, 20, 10], [0.1, 0.2, 0.3], 0.95, "non-decreasing"),
        ([0, 10], [0.1, 0.2], 0.0, "fraction"),
        ([0, 10], [0.1, 0.2], 1.5, "fraction"),
    ],
)
def test_steps_to_fraction_rejects_bad_input(steps, accs, fraction, match):
    with pytest.raises(ValueError, match=match):
        steps_to_fraction(steps, accs, fraction=fraction)


# ---------------------------------------------------------------------------------------------
# Agreement with Avalanche (avalanche-lib 0.6.0) on a real class-incremental run
# ---------------------------------------------------------------------------------------------
#
# What Avalanche records (avalanche/evaluation/metrics/forgetting_bwt.py, forward_transfer.py):
# - Forgetting/BWT: `initial[j]` is the accuracy on experience j from an eval while
#   train_exp_id == j (GenericStreamForgetting.after_eval_exp), i.e. R[j, j] when the test stream
#   is evaluated after training on j. `last[j]` is the accuracy from the current eval, and is
#   reset at before_eval, so the experience just trained has no `last` and is skipped. StreamBWT
#   = Mean over evaluated j with both values of (last - initial) (forgetting_to_bwt: BWT = -1 *
#   forgetting), weight 1 each. At the end: 1/(T-1) * sum_{j<T-1} (R[T-1,j] - R[j,j]) = our BWT.
#   StreamForgetting is exactly -StreamBWT: the drop from R[j,j], not Chaudhry's max over l.
# - ForwardTransfer: `initial[k]` is the accuracy from the *first* eval the metric ever sees
#   (`at_init`, which also asserts eval_every > -1), i.e. b[k] if the stream is evaluated before
#   training. `previous[k]` is set when train_exp_id == k - 1, i.e. R[k-1, k]; it is never reset.
#   StreamForwardTransfer = Mean over evaluated k in `previous` of previous[k] - initial[k]; at
#   the end, k = 1..T-1: 1/(T-1) * sum_{j>=1} (R[j-1,j] - b[j]) = our FWT.
# - Where nothing is defined yet (no term to average) Avalanche's Mean returns 0.0; we return NaN.

T_AVL = 5


def _run_avalanche(scenario: str):
    """Train Avalanche's Naive strategy on a 5-experience sklearn-digits stream and return R, b
    (from Avalanche's own per-experience accuracies) and its stream metrics after each row."""
    from avalanche.benchmarks import nc_benchmark, tensors_benchmark
    from avalanche.evaluation.metrics import (
        accuracy_metrics,
        bwt_metrics,
        forgetting_metrics,
        forward_transfer_metrics,
    )
    from avalanche.models import SimpleMLP
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)  # pixel values are 0..16
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    if scenario == "class_incremental":
        # Split-digits, 2 classes per experience: off-diagonal accuracies are mostly 0.
        train_ds, test_ds = TensorDataset(X[tr], y[tr]), TensorDataset(X[te], y[te])
        train_ds.targets, test_ds.targets = y[tr].tolist(), y[te].tolist()  # Avalanche reads .targets
        bench = nc_benchmark(train_ds, test_ds, n_experiences=T_AVL, task_labels=False, seed=0)
    else:
        # Domain-incremental: experience k = its own fifth of the training images rolled k pixels
        # to the right; test experience k = all test images rolled k. Neighbouring shifts share
        # features, so R has non-zero entries everywhere, positive forward transfer, and columns
        # whose best accuracy is not on the diagonal (what separates F from -BWT).
        def shifted(idx, k):
            return torch.roll(X[idx].view(-1, 8, 8), shifts=k, dims=2).reshape(-1, 64), y[idx]

        chunks = tr.chunk(T_AVL)
        bench = tensors_benchmark(
            train_tensors=[shifted(chunks[k], k) for k in range(T_AVL)],
            test_tensors=[shifted(te, k) for k in range(T_AVL)],
            task_labels=[0] * T_AVL,
        )

    model = SimpleMLP(num_classes=10, input_size=64, hidden_size=64, drop_rate=0.0)
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        forward_transfer_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[],
    )
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=32,
        train_epochs=2,
        eval_mb_size=512,
        evaluator=evaluator,
        eval_every=0,  # forward transfer asserts eval_every > -1; we schedule evals ourselves
        device="cpu",
    )
    # Schedule: the test stream once before any training (gives b and Avalanche's FT `initial`),
    # then after training on each experience (row i of R). eval_streams=[] turns off the periodic
    # evals so each row comes from exactly one eval call.
    evals = [strategy.eval(bench.test_stream)]
    for exp in bench.train_stream:
        strategy.train(exp, eval_streams=[])
        evals.append(strategy.eval(bench.test_stream))

    def row(d):
        return [d[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"] for j in range(T_AVL)]

    b = np.array(row(evals[0]))
    R = np.array([row(d) for d in evals[1:]])
    stream = {
        name: [d[f"{name}/eval_phase/test_stream"] for d in evals[1:]]
        for name in ("StreamBWT", "StreamForwardTransfer", "StreamForgetting")
    }
    return scenario, R, b, stream


@pytest.fixture(scope="module", params=["class_incremental", "domain_incremental"])
def avalanche_run(request):
    return _run_avalanche(request.param)


def test_avalanche_run_is_nontrivial(avalanche_run):
    scenario, R, b, _ = avalanche_run
    assert R.shape == (T_AVL, T_AVL) and b.shape == (T_AVL,)
    # Each experience is learned (diagonal well above 10% chance) and partly forgotten.
    assert np.all(np.diag(R) > 0.3)
    assert backward_transfer(R) < -0.1
    if scenario == "class_incremental":
        # Unseen classes are never predicted before their experience: FWT = -mean_{j>=1} b[j].
        assert forward_transfer(R, b) == pytest.approx(-b[1:].mean(), abs=1e-12) and b[1:].mean() > 0
    else:
        assert forward_transfer(R, b) > 0.05
        # Some column peaks off the diagonal, so forgetting(R) > -BWT strictly.
        assert np.any(R[:-1, :-1].max(axis=0) > np.diag(R)[:-1])
        assert forgetting(R) > -backward_transfer(R) + 1e-3


def test_backward_transfer_agrees_with_avalanche(avalanche_run):
    _, R, _, stream = avalanche_run
    assert backward_transfer(R) == pytest.approx(stream["StreamBWT"][-1], abs=1e-6)
    # After training on i, Avalanche's StreamBWT is our BWT of the seen (i+1)x(i+1) block;
    # after the first experience it has nothing to average and reports 0.0 (we say NaN).
    assert stream["StreamBWT"][0] == 0.0 and math.isnan(backward_transfer(R[:1, :1]))
    for i in range(1, T_AVL):
        assert backward_transfer(R[: i + 1, : i + 1]) == pytest.approx(stream["StreamBWT"][i], abs=1e-6)
    # GEM-code convention would differ by the factor (T-1)/T = 0.8: Avalanche uses the paper's.
    assert backward_transfer(R, "gem_code") != pytest.approx(stream["StreamBWT"][-1], abs=1e-3)


def test_forward_transfer_agrees_with_avalanche(avalanche_run):
    _, R, b, stream = avalanche_run
    assert forward_transfer(R, b) == pytest.approx(stream["StreamForwardTransfer"][-1], abs=1e-6)
    # After training on i, Avalanche already includes experience i+1 (R[i, i+1] - b[i+1] is known
    # then), so it equals our FWT on the (m+1)x(m+1) block with m = min(i+1, T-1).
    for i in range(T_AVL):
        m = min(i + 1, T_AVL - 1)
        want = stream["StreamForwardTransfer"][i]
        assert forward_transfer(R[: m + 1, : m + 1], b[: m + 1]) == pytest.approx(want, abs=1e-6)


def test_forgetting_relation_to_avalanche(avalanche_run):
    _, R, _, stream = avalanche_run
    avl_forgetting = stream["StreamForgetting"][-1]
    # Avalanche's StreamForgetting is -BWT: mean_{j<T-1} (R[j,j] - R[T-1,j]).
    assert avl_forgetting == pytest.approx(-backward_transfer(R), abs=1e-6)
    # Ours (Chaudhry 2018) takes the best earlier accuracy max_{l<T-1} R[l,j] instead of R[j,j],
    # so it exceeds Avalanche's by exactly mean_{j<T-1} (max_{l<T-1} R[l,j] - R[j,j]) >= 0.
    gap = float(np.mean(R[:-1, :-1].max(axis=0) - np.diag(R)[:-1]))
    assert gap >= 0.0
    assert forgetting(R) == pytest.approx(avl_forgetting + gap, abs=1e-6)
