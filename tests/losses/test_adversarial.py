"""Soft-label BCE (TUDSR eq. 6, 7) and RaGAN (StrSR eq. 7) against numbers written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from losses.adversarial import AdversarialLoss, RaGAN, SoftLabelBCE


def bce(z: float, label: float) -> float:
    """-(label log sigmoid(z) + (1 - label) log(1 - sigmoid(z)))."""
    s = 1 / (1 + math.exp(-z))
    return -(label * math.log(s) + (1 - label) * math.log(1 - s))


def test_bce_reference_numbers() -> None:
    assert bce(0.0, 0.8) == pytest.approx(math.log(2))
    assert bce(2.0, 0.8) == pytest.approx(math.log(1 + math.exp(-2)) + 0.2 * 2)


def three_levels() -> list[torch.Tensor]:
    return [
        torch.zeros(2, 1, 2, 2),  # patch map of logit 0
        torch.full((2, 1, 3, 3), 2.0),  # patch map of logit 2
        torch.tensor([[-1.0], [3.0]]),  # vector level
    ]


def test_soft_label_generator_averages_levels() -> None:
    loss = SoftLabelBCE()
    got = loss.generator_loss(three_levels())
    expected = (math.log(2) + bce(2.0, 0.8) + (bce(-1.0, 0.8) + bce(3.0, 0.8)) / 2) / 3
    assert got.item() == pytest.approx(expected, rel=1e-6)
    summed = SoftLabelBCE(reduce_levels="sum").generator_loss(three_levels())
    assert summed.item() == pytest.approx(3 * expected, rel=1e-6)
    assert isinstance(loss, AdversarialLoss)
    assert sum(p.requires_grad for p in loss.parameters()) == 0


def test_soft_label_discriminator_real_plus_fake() -> None:
    loss = SoftLabelBCE()
    real = three_levels()
    fake = [torch.full((2, 1, 2, 2), -1.0), torch.tensor([[0.5], [1.5]]), torch.zeros(2, 1)]
    got = loss.discriminator_loss(real, fake)
    l_real = (math.log(2) + bce(2.0, 0.8) + (bce(-1.0, 0.8) + bce(3.0, 0.8)) / 2) / 3
    # label 0: BCE = log(1 + e^z)
    l_fake = (math.log(1 + math.exp(-1.0)) + (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(1.5))) / 2
              + math.log(2)) / 3
    assert got.item() == pytest.approx(l_real + l_fake, rel=1e-6)
    assert loss.real_loss(real).item() == pytest.approx(l_real, rel=1e-6)
    custom = SoftLabelBCE(real_label=1.0, gen_label=0.9, fake_label=0.1)
    assert custom.generator_loss([torch.zeros(1, 1)]).item() == pytest.approx(math.log(2), rel=1e-6)
    assert custom.discriminator_loss([torch.full((1, 1), 2.0)], [torch.full((1, 1), 2.0)]).item() == pytest.approx(
        bce(2.0, 1.0) + bce(2.0, 0.1), rel=1e-6)


def softplus(z: float) -> float:
    return math.log(1 + math.exp(z))


def test_ragan_vector_and_map_levels_summed() -> None:
    # level 1: vectors (B=2, 1)
    r1, f1 = [1.0, 3.0], [0.0, -2.0]
    # level 2: patch maps (B=2, 1, 1, 2); batch means are taken per spatial position
    r2 = [[0.5, -1.0], [1.5, 2.0]]
    f2 = [[0.0, 1.0], [-2.0, 3.0]]
    real = [torch.tensor(r1).view(2, 1), torch.tensor(r2).view(2, 1, 1, 2)]
    fake = [torch.tensor(f1).view(2, 1), torch.tensor(f2).view(2, 1, 1, 2)]

    def level(a: list, b: list) -> float:  # (BCE(a - mean_B b, 1) + BCE(b - mean_B a, 0)) / 2, flattened per position
        a_rows = [x if isinstance(x, list) else [x] for x in a]
        b_rows = [x if isinstance(x, list) else [x] for x in b]
        n, m = len(a_rows), len(a_rows[0])
        mean_a = [sum(a_rows[i][j] for i in range(n)) / n for j in range(m)]
        mean_b = [sum(b_rows[i][j] for i in range(n)) / n for j in range(m)]
        up = sum(softplus(-(a_rows[i][j] - mean_b[j])) for i in range(n) for j in range(m)) / (n * m)
        down = sum(softplus(b_rows[i][j] - mean_a[j]) for i in range(n) for j in range(m)) / (n * m)
        return (up + down) / 2

    loss = RaGAN()
    d_expected = level(r1, f1) + level(r2, f2)
    g_expected = level(f1, r1) + level(f2, r2)
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(d_expected, rel=1e-6)
    # spot check of level 1 by explicit numbers: mean f = -1, mean r = 2
    assert level(r1, f1) == pytest.approx(
        (softplus(-2.0) + softplus(-4.0)) / 4 + (softplus(-2.0) + softplus(-4.0)) / 4)

    real_req = [t.clone().requires_grad_(True) for t in real]
    fake_req = [t.clone().requires_grad_(True) for t in fake]
    g = loss.generator_loss(fake_req, real_req)
    assert g.item() == pytest.approx(g_expected, rel=1e-6)
    g.backward()
    assert all(t.grad is None for t in real_req)  # real logits detached for G
    assert all(t.grad is not None for t in fake_req)
    with pytest.raises(ValueError):
        loss.generator_loss(fake)
    with pytest.raises(ValueError):
        loss.discriminator_loss(real[:1], fake)
    assert sum(p.requires_grad for p in loss.parameters()) == 0


def test_ragan_discriminator_loss_ignores_a_shift_of_one_levels_logits() -> None:
    """RaGAN compares a level's real and fake logits by their difference, so adding one constant to both (the bias of
    that level's last layer) changes nothing: that bias gets no gradient from the discriminator loss."""
    torch.manual_seed(0)
    real = [torch.randn(2, 1, 3, 3), torch.randn(2, 1)]
    fake = [torch.randn(2, 1, 3, 3), torch.randn(2, 1)]
    shift = torch.tensor(0.7, requires_grad=True)
    loss = RaGAN()
    base = loss.discriminator_loss(real, fake)
    shifted = loss.discriminator_loss([real[0] + shift, real[1]], [fake[0] + shift, fake[1]])
    assert shifted.item() == pytest.approx(base.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(shifted, shift)
    assert abs(grad.item()) < 1e-6
    moved = loss.discriminator_loss([real[0] + 0.7, real[1]], fake)  # shifting the reals alone does change it
    assert abs(moved.item() - base.item()) > 1e-3


def test_ragan_released_form_halves_paper_eq7() -> None:
    """Hand values of both forms on one vector level, B = 2. Paper eq. 7 with g(x, y) = sigmoid(C(x) - E_y[C(y)]):
    L_D = -E[log g(r, f)] - E[log(1 - g(f, r))], L_G = -E[log g(f, r)] - E[log(1 - g(r, f))]. The released code
    (jkwang28/StrSR, HYPIR/trainer/base.py) divides each by 2."""
    r, f = [1.0, 3.0], [0.0, -1.0]  # mean r = 2, mean f = -0.5

    def sig(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    mean_r, mean_f = sum(r) / 2, sum(f) / 2
    paper_d = (-sum(math.log(sig(x - mean_f)) for x in r) / 2 - sum(math.log(1 - sig(y - mean_r)) for y in f) / 2)
    paper_g = (-sum(math.log(sig(y - mean_r)) for y in f) / 2 - sum(math.log(1 - sig(x - mean_f)) for x in r) / 2)
    real, fake = [torch.tensor(r).view(2, 1)], [torch.tensor(f).view(2, 1)]
    paper, released = RaGAN(form="paper"), RaGAN()
    assert released.form == "released"
    assert paper.discriminator_loss(real, fake).item() == pytest.approx(paper_d, rel=1e-6)
    assert paper.generator_loss(fake, real).item() == pytest.approx(paper_g, rel=1e-6)
    assert released.discriminator_loss(real, fake).item() == pytest.approx(paper_d / 2, rel=1e-6)
    assert released.generator_loss(fake, real).item() == pytest.approx(paper_g / 2, rel=1e-6)
    # spot check by explicit numbers: D's real term is -(log sig(1.5) + log sig(3.5)) / 2
    assert -(math.log(sig(1.5)) + math.log(sig(3.5))) / 2 == pytest.approx(
        -sum(math.log(sig(x - mean_f)) for x in r) / 2)
    with pytest.raises(ValueError, match="form"):
        RaGAN(form="half")
