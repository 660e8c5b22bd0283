"""Offline protocol pieces on hand-made tensors: herding, LUCIR's terms, iCaRL's NME, SSIL's softmax."""
import math

import pytest
import torch
import torch.nn.functional as F

from engine.backbones.heads import CosineLinear
from engine.buffers.herding import HerdingBuffer, herding_select
from engine.methods.exemplar import taskwise_log_softmax
from engine.sampling import class_balanced_pick
from engine.methods.icarl import exemplar_means, nme_scores
from engine.methods.lucir import adaptive_lambda, less_forget_loss, margin_ranking_loss
from engine.methods.ssil import separated_softmax_loss, task_wise_kd


# ---- herding ---------------------------------------------------------------------------------

# Candidates in order; class 0 holds a=(1,0), c=(.8,.6), d=(.6,.8), b=(0,1) (mean (.6,.6)), class 1
# holds (-1,0), (0,-1). Greedy by hand, class 0: step 1 c and d tie at 0.2 -> the earlier, row 2;
# step 2 d (0.141 vs a .424, b .283) -> row 3; step 3 a and b tie at 0.240 -> row 0.
# Class 1 ties at step 1 -> row 1, then row 4; it has only 2 candidates.
HAND_FEATS = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, -1.0], [0.0, 0.5]])
HAND_LABELS = torch.tensor([0, 1, 0, 0, 1, 0])


def test_herding_picks_the_greedy_exemplars_of_a_hand_made_set():
    # rows 0 and 5 are not unit length: herding must L2-normalise before comparing
    assert herding_select(HAND_FEATS, HAND_LABELS, 2, 3).tolist() == [2, 3, 0, 1, 4]
    assert herding_select(HAND_FEATS, HAND_LABELS, 2, 1).tolist() == [2, 1]


def greedy_reference(feats, labels, per_class):
    """FACIL's HerdingExemplarsSelector loop, verbatim in spirit (per sample, per step)."""
    feats = feats / feats.norm(dim=1, keepdim=True)
    out = []
    for c in sorted(set(labels.tolist())):
        idx = [i for i in range(len(labels)) if labels[i] == c]
        mu = feats[idx].mean(0)
        chosen, chosen_sum = [], torch.zeros(feats.shape[1])
        for k in range(min(per_class, len(idx))):
            best, best_d = None, math.inf
            for i in idx:
                if i in chosen:
                    continue
                d = float((mu - (chosen_sum + feats[i]) / (k + 1)).norm())
                if d < best_d:
                    best, best_d = i, d
            chosen.append(best)
            chosen_sum += feats[best]
        out += chosen
    return out


def test_herding_matches_the_reference_loop_on_random_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([2] * 9 + [0] * 12 + [1] * 3)[torch.randperm(24, generator=g)]
    feats = torch.randn(24, 5, generator=g)
    assert herding_select(feats, labels, 3, 5).tolist() == greedy_reference(feats, labels, 5)


def test_herding_buffer_keeps_an_even_share_per_class_and_survives_state_dict():
    buf = HerdingBuffer(7, 2, torch.device("cpu"))
    x = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    buf.select({"x": x, "y": HAND_LABELS, "task": HAND_LABELS}, HAND_FEATS, n_classes=2)
    assert len(buf) == 6 and buf.all()["y"].tolist() == [0, 0, 0, 0, 1, 1]   # ceil(7 / 2) = 4 per class
    assert buf.all()["x"][:, 0, 0, 0].tolist() == [2, 3, 0, 5, 1, 4]
    copy = HerdingBuffer(7, 2, torch.device("cpu"))
    copy.load_state_dict(buf.state_dict())
    assert all(torch.equal(copy.all()[k], buf.all()[k]) for k in ("x", "y", "task"))
    with pytest.raises(TypeError):
        buf.add(0, x=x, y=HAND_LABELS)


def test_herding_rounds_the_per_class_count_up_as_facil():
    """Issue 15 point 5: 2000 exemplars over 30 seen classes keep 67 each (FACIL), not 66."""
    buf = HerdingBuffer(2000, 3, torch.device("cpu"))
    y = torch.arange(30).repeat_interleave(70)
    buf.select({"x": torch.zeros(y.shape[0], 1, 1, 1, dtype=torch.uint8), "y": y}, torch.randn(y.shape[0], 4), 30)
    assert torch.bincount(buf.all()["y"]).tolist() == [67] * 30 and len(buf) == 2010


def test_class_balanced_pick_takes_the_asked_count_of_every_label():
    y = torch.tensor([0] * 10 + [1] * 4 + [2] * 7)
    pick = class_balanced_pick(y, torch.tensor([3, 5, 0]), torch.Generator().manual_seed(1))
    assert torch.bincount(y[pick], minlength=3).tolist() == [3, 4, 0]
    assert pick.tolist() == sorted(set(pick.tolist()))


# ---- LUCIR -----------------------------------------------------------------------------------

def test_lucir_cosine_logits_are_sigma_times_cosine():
    head = CosineLinear(2, [1, 1])
    with torch.no_grad():
        head.weights[0].copy_(torch.tensor([[1.0, 0.0]]))
        head.weights[1].copy_(torch.tensor([[0.0, 2.0]]))
        head.sigma.fill_(2.0)
    f = torch.tensor([[3.0, 4.0]])                       # unit: (0.6, 0.8)
    assert torch.allclose(head.cosine(f), torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(head(f), torch.tensor([[1.2, 1.6]]))
    assert [p.shape for p in head.task_parameters([1])] == [torch.Size([1, 2])]
    assert head.shared_parameters() == [head.sigma]


def test_lucir_adaptive_lambda():
    assert adaptive_lambda(5.0, 50, 10) == pytest.approx(5.0 * math.sqrt(5.0))
    assert adaptive_lambda(5.0, 10, 10) == pytest.approx(5.0)
    assert adaptive_lambda(5.0, 50, 10, adapt=False) == 5.0


def test_lucir_less_forget_is_one_minus_cosine_averaged():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    f_old = torch.tensor([[1.0, 1.0], [0.0, 5.0]])
    assert float(less_forget_loss(f, f_old)) == pytest.approx((1 - 1 / math.sqrt(2) + 0.0) / 2, abs=1e-6)


def test_lucir_margin_ranking_with_k2_on_old_class_rows_only():
    # 2 old classes (0, 1), 3 new (2, 3, 4); margin 0.5
    cos = torch.tensor([[0.5, 0.1, 0.3, 0.2, 0.6],     # label 0: gt .5, top-2 new .6, .3 -> hinges .6, .3
                        [0.0, 0.0, 0.9, 0.9, 0.9],     # label 3: a new class, ignored
                        [0.0, 0.9, 0.1, 0.0, 0.2]])    # label 1: gt .9, top-2 new .2, .1 -> hinges 0, 0
    y = torch.tensor([0, 3, 1])
    loss = margin_ranking_loss(cos, y, n_old=2, k=2, margin=0.5)
    assert float(loss) == pytest.approx((0.6 + 0.3 + 0 + 0) / 4)
    # torch's MarginRankingLoss on the gathered pairs (FACIL's formulation) agrees
    gt = torch.tensor([0.5, 0.5, 0.9, 0.9])
    top = torch.tensor([0.6, 0.3, 0.2, 0.1])
    assert float(loss) == pytest.approx(float(F.margin_ranking_loss(gt, top, torch.ones(4), margin=0.5)))
    assert float(margin_ranking_loss(cos, torch.tensor([2, 3, 4]), 2, 2, 0.5)) == 0.0   # no old-class row


# ---- iCaRL -----------------------------------------------------------------------------------

def test_icarl_nearest_mean_of_exemplars():
    feats = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])     # class 0: two exemplars, class 1: one
    means, has = exemplar_means(feats, torch.tensor([0, 0, 1]), n_classes=3)
    s = 1 / math.sqrt(2)
    assert torch.allclose(means[:2], torch.tensor([[s, s], [-1.0, 0.0]])) and has.tolist() == [True, True, False]
    x = torch.tensor([[1.0, 0.9], [-3.0, 0.1], [0.0, 1.0]])
    scores = nme_scores(x, means, has)
    assert scores.argmax(1).tolist() == [0, 1, 0]
    assert torch.isinf(scores[:, 2]).all()                          # no exemplars -> never predicted
    expected = -((x[2] / x[2].norm()) - means[0]).pow(2).sum()
    assert float(scores[2, 0]) == pytest.approx(float(expected), abs=1e-6)


# ---- SSIL ------------------------------------------------------------------------------------

def test_ssil_separated_softmax():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0],    # current rows (classes 2, 3 of task 1)
                           [0.0, 0.0, 3.0, 1.0],
                           [2.0, -2.0, 9.0, 9.0]])  # memory row (class 0): its new-class logits do not count
    y = torch.tensor([2, 3, 0])

    def nll(row, cls):
        return -(row[cls] - row.logsumexp(0))
    expected = (nll(logits[0, 2:], 0) + nll(logits[1, 2:], 1) + nll(logits[2, :2], 0)) / 3
    assert float(separated_softmax_loss(logits, y, n_current=2, lo=2, hi=4)) == pytest.approx(float(expected))


def test_ssil_task_wise_distillation_sums_kl_over_tasks():
    new, old = torch.randn(4, 5), torch.randn(4, 5)
    sizes, T = [2, 3], 2.0
    expected = 0.0
    for n, o in zip(new.split(sizes, 1), old.split(sizes, 1)):
        p = F.softmax(o / T, 1)
        expected += (p * (p.log() - F.log_softmax(n / T, 1))).sum(1).mean() * T * T
    assert float(task_wise_kd(new, old, sizes, T)) == pytest.approx(float(expected), rel=1e-5)
    assert torch.allclose(taskwise_log_softmax(new, sizes)[:, 2:].exp().sum(1), torch.ones(4))
