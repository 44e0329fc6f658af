"""Search parts on synthetic inputs: budgets, space, controllers, cost tables, penalty, selection."""

import itertools

import numpy as np
import pytest
import torch

from dnsrec_edge.cost.model import FlopsModel
from dnsrec_edge.errors import ArchSpecError, BudgetError
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec
from dnsrec_edge.search.budget import Budget, budget_from_dict, parse_budget
from dnsrec_edge.search.constraint import CostTable, Penalty, depth_factor
from dnsrec_edge.search.controllers import ArchController, MixWeights, anneal
from dnsrec_edge.search.front import FrontPoint, most_probable_in_budget, pick
from dnsrec_edge.search.loop import SearchConfig
from dnsrec_edge.search.space import Choice, SearchSpace


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: waking a second thread costs more than the work on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


ACCEPTED = (
    "latency=25% (share of the baseline), flops=25%supernet (share of the full supernet), "
    "flops=30M, latency=1.5ms, energy=2mJ or step-latency=0.05ms (one streaming step)"
)
SPACE = SearchSpace(n_items=120, max_len=30, max_depth=3, gate_hidden=8)
SPACE_LIN = SearchSpace(n_items=50, max_len=16, max_depth=2, attention=("softmax", "linear"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("flops=25%", Budget("flops", 0.25, "baseline")),
        ("flops=25%supernet", Budget("flops", 0.25, "supernet")),
        ("FLOPS = 10 %", Budget("flops", 0.10, "baseline")),
        ("flops=30M", Budget("flops", 30e6)),
        ("flops=2.5e7", Budget("flops", 2.5e7)),
        ("flops=1g", Budget("flops", 1e9)),
        ("latency=1.5ms", Budget("latency", 1.5)),
        ("latency=800us", Budget("latency", 0.8)),
        ("latency=50%", Budget("latency", 0.5, "baseline")),
        ("energy=2mJ", Budget("energy", 2.0)),
        ("energy=0.5J", Budget("energy", 500.0)),
        ("step-latency=50us", Budget("step-latency", 0.05)),
        ("step-latency=10%", Budget("step-latency", 0.1, "baseline")),
    ],
)
def test_parse_budget_accepted_forms(text, expected):
    got = parse_budget(text)
    assert got.kind == expected.kind and got.relative_to == expected.relative_to
    assert got.value == pytest.approx(expected.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("flops", f"cannot parse budget 'flops'; use {ACCEPTED}"),
        ("flops=abc", f"cannot parse budget 'flops=abc'; use {ACCEPTED}"),
        (
            "speed=3ms",
            f"unknown budget kind 'speed' in 'speed=3ms'; use one of flops, latency, "
            f"energy, step-latency as in {ACCEPTED}",
        ),
        ("latency=3", f"budget 'latency=3' needs a unit; use {ACCEPTED}"),
        (
            "latency=3mj",
            f"unknown unit 'mj' for a latency budget in 'latency=3mj'; use one of ms, "
            f"us, s, % as in {ACCEPTED}",
        ),
        ("flops=0%", f"budget 'flops=0%' must be positive; use {ACCEPTED}"),
        (
            "flops=120%supernet",
            "budget 'flops=120%supernet' is over 100% of the full supernet; use at most 100%",
        ),
        (
            "flops=20%teacher",
            "unknown reference 'teacher' in 'flops=20%teacher'; a share is of the baseline "
            "('flops=25%') or of the full supernet ('flops=25%supernet')",
        ),
    ],
)
def test_parse_budget_errors_name_the_accepted_forms(text, message):
    with pytest.raises(BudgetError) as err:
        parse_budget(text)
    assert str(err.value) == message


def test_budget_limit():
    assert parse_budget("flops=25%").limit(reference=400.0) == pytest.approx(100.0)
    assert parse_budget("latency=2ms").limit(reference=400.0) == 2.0
    assert str(parse_budget("flops=25%")) == "flops=25%"
    assert str(parse_budget("flops=25%supernet")) == "flops=25%supernet"


def test_a_step_latency_budget_limits_the_latency_of_one_step():
    budget = parse_budget("step-latency=0.05ms")
    assert (budget.metric, budget.unit, budget.streaming) == ("latency", "ms", True)
    assert str(budget) == "step-latency=0.05ms"
    assert not parse_budget("latency=1ms").streaming


def test_budget_round_trip_and_old_run_files():
    for text in ("latency=25%", "flops=10%supernet", "energy=2mJ", "step-latency=20%"):
        budget = parse_budget(text)
        assert budget_from_dict(budget.to_dict()) == budget
    # run folders from before relative_to existed: a % budget was a share of the supernet
    old = {"text": "flops=25%", "kind": "flops", "value": 0.25, "relative": True}
    assert budget_from_dict(old) == Budget("flops", 0.25, "supernet")


def test_space_candidates_and_round_trip():
    assert SPACE.heads == (4, 2, 1) and SPACE.ffn == (256, 128, 64)
    assert SPACE_LIN.attn_candidates[3] == ("linear", 4)
    choice = Choice(2, ((1, 2), (5, 0)))
    arch = SPACE_LIN.arch(choice)
    assert arch.blocks[1] == BlockSpec(1, 16, 256, 16, "linear")
    assert SPACE_LIN.choice_of(arch) == choice
    assert SearchSpace.from_dict(SPACE_LIN.to_dict()) == SPACE_LIN
    unsorted = SearchSpace(10, 8, heads=(1, 4, 2), ffn=(64, 256))
    assert unsorted.heads == (4, 2, 1) and unsorted.ffn == (256, 64)
    assert "positions" not in SPACE.to_dict()  # spaces written before the field read the same
    anchored = SearchSpace(120, 30, max_depth=3, gate_hidden=8, positions="start_anchored")
    assert SearchSpace.from_dict(anchored.to_dict()) == anchored
    one = Choice(1, ((0, 0),))
    assert anchored.arch(one).positions == "start_anchored"
    assert anchored.choice_of(anchored.arch(one)) == one
    with pytest.raises(ArchSpecError, match="has 'left_padded' positions but the search space"):
        anchored.choice_of(SPACE.arch(one))


def test_space_refuses_what_it_cannot_build():
    with pytest.raises(
        ArchSpecError, match="block 0 \\(softmax attention, 3 heads, FFN 256\\) is not a candidate"
    ):
        SPACE.choice_of(ArchSpec(120, 30, 64, (BlockSpec(3, 16, 256, 8),)))
    with pytest.raises(ArchSpecError, match="n_items 99"):
        SPACE.choice_of(ArchSpec(99, 30, 64, (BlockSpec(4, 16, 256, 8),)))
    with pytest.raises(ArchSpecError, match="depth 5 is outside 1..3"):
        SPACE.check(Choice(5, ((0, 0),) * 5))
    with pytest.raises(ArchSpecError, match="attention kinds"):
        SearchSpace(10, 8, attention=("softmax", "cosine"))


def test_anneal_and_temperature():
    assert anneal(0, 100) == pytest.approx(1.0)
    assert anneal(100, 100) == pytest.approx(0.01)
    assert anneal(50, 100) == pytest.approx(0.1)
    ctrl = ArchController(3, 3, 3)
    with torch.no_grad():
        ctrl.alpha_ffn[1, 2] = 0.05
    ctrl.set_temperature(1.0)
    soft = ctrl.probs().ffn[1, 2].item()
    ctrl.set_temperature(0.01)
    assert soft < 0.4 < 0.98 < ctrl.probs().ffn[1, 2].item()


def test_controller_choice_and_gumbel():
    ctrl = ArchController(3, 3, 3, gumbel=True)
    with torch.no_grad():
        ctrl.beta[1] = 1.0
        ctrl.alpha_attn[0, 2] = 1.0
        ctrl.alpha_ffn[1, 1] = 1.0
    assert ctrl.choice() == Choice(2, ((2, 0), (0, 1)))
    ctrl.train()
    a, b = ctrl.weights().attn, ctrl.weights().attn
    assert not torch.equal(a, b)  # sampled
    assert torch.allclose(a.sum(-1), torch.ones(3))
    ctrl.eval()
    assert torch.equal(ctrl.weights().attn, ctrl.probs().attn)


@pytest.fixture(scope="module")
def tables():
    model = FlopsModel(batch=1)
    return {s: CostTable.build(s, model) for s in (SPACE, SPACE_LIN)}


@pytest.mark.parametrize("space", [SPACE, SPACE_LIN])
def test_cost_table_is_exact_for_every_architecture(tables, space):
    table = tables[space]
    model = FlopsModel(batch=1)
    for choice in table.choices():
        assert table.of(choice) == model.predict(space.arch(choice)).flops
    assert table.reference() == model.predict(space.full_arch()).flops
    cheapest, cost = table.cheapest()
    assert cost == min(table.of(c) for c in table.choices())


@pytest.mark.parametrize("target, kind", [("x86_64", "latency"), ("arm64", "energy")])
def test_cost_table_is_exact_for_the_calibrated_models(target, kind):
    from dnsrec_edge.cost.calibrated import load_cost_model

    model = load_cost_model(target)
    table = CostTable.build(SPACE, model, kind, target)
    for choice in itertools.islice(table.choices(), 0, None, 29):
        assert table.of(choice) == pytest.approx(
            model.predict(SPACE.arch(choice)).get(kind), rel=1e-9
        )


def test_the_largest_in_budget_per_depth_is_the_costliest_that_fits(tables):
    table = tables[SPACE]
    limit = 0.5 * table.reference()
    largest = table.largest_within(limit)
    for choice in largest:
        same_depth = [table.of(c) for c in table.choices() if c.depth == choice.depth]
        assert table.of(choice) == max(c for c in same_depth if c <= limit)
    depths = [c.depth for c in largest]
    assert depths == sorted(depths) and len(set(depths)) == len(depths)
    assert table.largest_within(0.0) == []


def test_the_deepest_depth_within_a_limit_is_where_its_cheapest_fits(tables):
    table = tables[SPACE]
    cheapest = [
        min(table.of(c) for c in table.choices() if c.depth == d)
        for d in range(1, SPACE.max_depth + 1)
    ]
    assert [table.cheapest_of_depth(d) for d in range(1, SPACE.max_depth + 1)] == pytest.approx(
        cheapest
    )
    assert table.deepest_within(cheapest[1]) == 2
    assert table.deepest_within(cheapest[1] * 0.999) == 1
    assert table.deepest_within(0.0) == 1
    assert table.deepest_within(table.reference()) == SPACE.max_depth


def test_a_budget_leaves_out_the_depths_it_cannot_buy(tables):
    from dnsrec_edge.search.run import feasible_depths

    table = tables[SPACE]
    limit = table.cheapest_of_depth(2) / 1.05  # depth 2 within the 10 % tolerance only
    kept = feasible_depths(table, limit)
    assert kept.space.max_depth == 2 and kept.space.heads == SPACE.heads
    assert feasible_depths(table, table.cheapest_of_depth(2) / 1.2).space.max_depth == 1
    assert feasible_depths(table, table.reference()) is table


def test_expected_cost_of_one_hot_weights_is_the_cost(tables):
    table = tables[SPACE]
    for choice in itertools.islice(table.choices(), 0, None, 37):
        w = MixWeights.one_hot(choice, SPACE.max_depth, SPACE.n_attn, SPACE.n_ffn)
        assert float(table.expected(w)) == pytest.approx(table.of(choice), rel=1e-9)


def test_expected_cost_is_the_mean_over_sampled_architectures(tables):
    table = tables[SPACE]
    ctrl = ArchController(SPACE.max_depth, SPACE.n_attn, SPACE.n_ffn)
    with torch.no_grad():
        for p in ctrl.parameters():
            p.normal_()
    w = ctrl.probs()
    exact = 0.0
    for choice in table.choices():  # every architecture with its probability
        exact += torch.exp(torch.tensor(ctrl.log_prob(choice))).item() * table.of(choice)
    assert float(table.expected(w).detach()) == pytest.approx(exact, rel=1e-5)


def test_expected_cost_gradient_lowers_the_cost(tables):
    table = tables[SPACE]
    ctrl = ArchController(SPACE.max_depth, SPACE.n_attn, SPACE.n_ffn)
    opt = torch.optim.Adam(ctrl.parameters(), lr=0.05)
    start = table.expected(ctrl.probs()).item()
    for _ in range(20):
        loss = table.expected(ctrl.probs()) / start
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert table.expected(ctrl.probs()).item() < 0.5 * start


def test_dual_ascent_rises_over_budget_and_falls_under():
    pen = Penalty("dynamic", lam=0.1, step=0.1)
    pen.update(2.0)
    assert pen.lam == pytest.approx(0.2)
    pen.update(0.5)
    assert pen.lam == pytest.approx(0.15)
    for _ in range(3):
        pen.update(0.0)
    assert pen.lam == pytest.approx(-0.15)  # far under budget: pulls towards it
    fixed = Penalty("fixed", lam=0.1, step=0.1)
    fixed.update(5.0)
    assert fixed.lam == 0.1
    ratio = torch.tensor(1.5, requires_grad=True)
    term = fixed.term(ratio, 0.5)
    term.backward()
    assert term.item() == pytest.approx(0.075) and ratio.grad.item() == pytest.approx(0.05)


def test_depth_factor_follows_the_preferred_depth():
    w = MixWeights.one_hot(Choice(2, ((0, 0), (0, 0))), 4, 3, 3)
    assert depth_factor(w) == 0.5


def test_most_probable_in_budget_is_exhaustive(tables):
    table = tables[SPACE]
    ctrl = ArchController(SPACE.max_depth, SPACE.n_attn, SPACE.n_ffn)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in ctrl.parameters():
            p.normal_()
    limit = 0.3 * table.reference()
    got = most_probable_in_budget(ctrl, table, limit, k=5)
    brute = sorted(
        (c for c in table.choices() if table.of(c) <= limit), key=lambda c: -ctrl.log_prob(c)
    )[:5]
    assert got == brute and all(table.of(c) <= limit for c in got)
    assert most_probable_in_budget(ctrl, table, 0.5 * table.cheapest()[1]) == []


def test_most_probable_in_budget_survives_probabilities_that_underflow(tables):
    """At a low temperature the in-budget choices' probabilities can underflow to 0 while
    the controllers sit on an over-budget one; the search then still finds the most probable
    in-budget choice (a seed once failed here with an empty list)."""
    table = tables[SPACE]
    ctrl = ArchController(SPACE.max_depth, SPACE.n_attn, SPACE.n_ffn)
    with torch.no_grad():
        ctrl.alpha_attn.copy_(torch.arange(SPACE.n_attn, 0, -1, dtype=torch.float32) * 5)
        ctrl.beta.copy_(torch.arange(SPACE.max_depth, dtype=torch.float32) * 5)  # deepest
    ctrl.set_temperature(0.05)
    assert float(ctrl.probs().attn.detach().min()) == 0.0  # underflowed
    limit = table.cheapest()[1]
    got = most_probable_in_budget(ctrl, table, limit)
    assert len(got) == 1 and table.of(got[0]) <= limit


def test_search_config_validation():
    with pytest.raises(Exception, match="warmup_epochs must lie in 0..epochs-1"):
        SearchConfig(epochs=2, warmup_epochs=2)
    with pytest.raises(Exception, match="penalty 'soft' is not one of dynamic, fixed"):
        SearchConfig(penalty="soft")
    with pytest.raises(Exception, match=r"inherit_lr must lie in \(0, 1\] \(got 0\)"):
        SearchConfig(inherit_lr=0)


def test_a_baseline_share_needs_a_cost_model_that_predicts_the_baseline():
    from dnsrec_edge.search.run import baseline_cost, default_baseline_arch

    budget = parse_budget("latency=25%")
    base = default_baseline_arch(SPACE)
    assert base.depth == 2 and base.blocks[0].heads == 1 and base.hidden == SPACE.hidden
    with pytest.raises(BudgetError) as err:
        baseline_cost(FlopsModel(), base, budget, "rpi4")
    assert str(err.value) == (
        "the budget latency=25% is a share of the baseline's latency, which the cost model of "
        "target 'rpi4' cannot predict (it has no latency figure); calibrate the target with "
        "'dnsrec-edge calibrate --target rpi4' or give an absolute budget"
    )
    flops = parse_budget("flops=50%")
    assert baseline_cost(FlopsModel(), base, flops, None) == FlopsModel().predict(base).flops


def test_pick_takes_a_measured_share_within_the_tolerance_only_when_none_fits():
    def point(ndcg, cost, share):
        return FrontPoint(Choice(1, ((0, 0),)), 0.0, cost, {"ndcg@10": ndcg}, share)

    exact, over, far = point(0.10, 1.0, 0.24), point(0.12, 1.0, 0.26), point(0.13, 1.0, 0.30)
    assert pick([exact, over, far], 2.0, 0.25) is exact  # in budget beats more accurate
    assert pick([over, far], 2.0, 0.25) is over  # 26 % measured for 25 %: within 10 %
    assert pick([far], 2.0, 0.25) is None  # 30 % is not
    assert pick([point(0.2, 3.0, 0.1)], 2.0, 0.25) is None  # the predicted cost still binds


def test_pick_takes_the_largest_point_within_one_paired_standard_error_of_the_best():
    hit = np.zeros(2000, dtype=bool)
    hit[:600] = True  # the users the best model ranks at the top

    def point(cost, gains, losses):  # users that gain or lose a top-ranked target
        ndcg = hit.copy()
        ndcg[600 : 600 + gains] = True
        ndcg[:losses] = False
        ndcg = ndcg * 0.5
        return FrontPoint(
            Choice(1, ((0, 0),)), 0.0, cost, {"ndcg@10": float(ndcg.mean())}, user_ndcg=ndcg
        )

    # close: 19 users gain, 21 lose (gap -0.0005, SE 0.0016); far: 200 lose (gap -0.05)
    best, close, far = point(1.0, 0, 0), point(1.8, 19, 21), point(1.9, 0, 200)
    chosen = pick([best, close, far], 2.0, None)
    assert chosen is close  # within noise of the best and more capacity
    assert best.gap == 0.0 and -close.gap_se <= close.gap < 0 and far.gap < -far.gap_se
    assert pick([best, far], 2.0, None) is best  # clearly worse loses despite its capacity
    assert "user_ndcg" not in close.to_dict() and close.to_dict()["gap_se"] > 0
