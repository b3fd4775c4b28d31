"""neumeta_cl.reference.avalanche: our naive and Avalanche's Naive agree on the same stream and init."""

import json

import pytest
import torch

from neumeta_cl.reference import avalanche


def test_quick_naive_agrees_with_avalanche():
    # The script's --quick: split digits, 30 epochs per experience (each experience is learned to
    # ~95-100%, so only the mini-batch order differs; measured |diff| <= 0.3 points over seeds 0-2).
    threads = torch.get_num_threads()
    try:
        res = avalanche.compare(avalanche.QUICK_BENCHMARK, ["naive"], [0], avalanche.QUICK_EPOCHS, threads=1,
                                log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    naive = res["strategies"]["naive"]
    assert res["benchmark"] == "split_digits"
    assert res["max_b_diff"] == 0  # identical initial weights and test data on both sides
    assert naive["n_compared"] == 1 and not naive["diverged"]
    assert abs(naive["acc_diff"]) < 2.0
    assert res["max_acc_diff"] == pytest.approx(abs(naive["acc_diff"]))
    assert any(line.startswith("| naive") for line in avalanche.format_table(res).splitlines())
    line = json.loads(avalanche.json_line(res))  # the script's last line: strict JSON, rounded
    assert line["max_acc_diff"] == pytest.approx(res["max_acc_diff"], abs=1e-4)
    assert line["strategies"]["naive"]["per_seed"][0]["b"] == naive["per_seed"][0]["b"]


def test_each_method_is_compared_where_it_is_meant_to_run():
    cases = {label: (name, bm, ov) for label, name, bm, ov in avalanche.cases_for(avalanche.STRATEGIES, None)}
    assert cases["si"][2] == ["benchmark.scenario=task"] and cases["mas"][2][0] == "benchmark.scenario=task"
    assert cases["agem"][:2] == ("agem", "split_fmnist") and cases["agem_permuted"][:2] == ("agem", "permuted_fmnist")
    for label in ("replay", "agem", "agem_permuted", "er_ace", "der", "gdumb"):
        assert "strategy.buffer_size=500" in cases[label][2]
    assert [c[0] for c in avalanche.cases_for(["der"], "split_digits")] == ["der"]  # one benchmark for all


def test_si_copies_weights_patches_only_inside_the_block():
    from avalanche.training.plugins.synaptic_intelligence import SynapticIntelligencePlugin as SIP

    original = SIP.__dict__["extract_weights"]
    net = torch.nn.Linear(3, 2)
    target = {n: type("Box", (), {})() for n, _ in net.named_parameters()}
    with avalanche.si_copies_weights():
        SIP.extract_weights(net, target, set())
        with torch.no_grad():
            net.weight.add_(1.0)
        assert not torch.equal(target["weight"].data, net.weight.detach().flatten())  # a copy, not a view
    assert SIP.__dict__["extract_weights"] is original
    SIP.extract_weights(net, target, set())
    with torch.no_grad():
        net.weight.add_(1.0)
    assert torch.equal(target["weight"].data, net.weight.detach().flatten())  # as shipped: a view on the CPU
