"""augment= (src/data/augment.py): label smoothing as torch's own, Mixup as timm's Mixup, CutMix's
box and weight, the policies per image, every draw from the run's generator, and a stack's
slots each mixing within their own batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup

from src.core.errors import ConfigError
from src.data.augment import Mix, Recipe, correct
from src.data.loader import DeviceData


def batch(n: int = 8, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(classes, (n,), generator=g)


def test_label_smoothing_is_torchs_own():
    x, y = batch()
    logits = torch.randn(8, 5)
    _, target = Recipe(label_smoothing=0.1).mixed(x, y, Mix(None), 5)
    torch.testing.assert_close(target.sum(1), torch.ones(8))
    torch.testing.assert_close(F.cross_entropy(logits, target),
                               F.cross_entropy(logits, y, label_smoothing=0.1))


def test_mixup_is_timms_mixup_for_the_same_weight(monkeypatch):
    """timm's Mixup in batch mode, its weight draw replaced by ours: the same inputs and
    targets (timm mixes in place, with x.flip(0), and smooths before mixing)."""
    x, y = batch()
    recipe = Recipe(label_smoothing=0.1, mixup_alpha=0.8)
    mix = recipe.draw(torch.Generator().manual_seed(3), torch.device("cpu"), (6, 6))
    assert mix.kind == "mixup" and 0 < mix.lam < 1
    ours = recipe.mixed(x.clone(), y, mix, 5)
    timm = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.1,
                 num_classes=5)
    monkeypatch.setattr(timm, "_params_per_batch", lambda: (mix.lam, False))
    theirs_x, theirs_y = timm(x.clone(), y)
    torch.testing.assert_close(ours[0], theirs_x)
    torch.testing.assert_close(ours[1], theirs_y)


def test_cutmix_pastes_a_box_of_the_reversed_batch_and_weighs_the_targets_by_its_area():
    x, y = batch()
    recipe = Recipe(cutmix_alpha=1.0)
    mixes = [recipe.draw(torch.Generator().manual_seed(s), torch.device("cpu"), (6, 6))
             for s in range(20)]
    assert all(m.kind == "cutmix" for m in mixes)
    mix = next(m for m in mixes if 0 < m.lam < 1)
    top, bottom, left, right = mix.box
    got_x, got_y = recipe.mixed(x, y, mix, 5)
    assert torch.equal(got_x[:, :, top:bottom, left:right],
                       x.flip(0)[:, :, top:bottom, left:right])
    outside = torch.ones(6, 6, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert torch.equal(got_x[:, :, outside], x[:, :, outside])
    assert mix.lam == pytest.approx(1 - (bottom - top) * (right - left) / 36)
    want = mix.lam * F.one_hot(y, 5) + (1 - mix.lam) * F.one_hot(y.flip(0), 5)
    torch.testing.assert_close(got_y, want.float())


def test_both_on_switch_between_them_and_prob_leaves_batches_unmixed():
    both = Recipe(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5)
    kinds = [both.draw(torch.Generator().manual_seed(s), torch.device("cpu"), (6, 6)).kind
             for s in range(200)]
    # 200 draws: about 100 unmixed, 50 of each kind (binomial: far inside these bounds)
    assert 60 < kinds.count(None) < 140
    assert kinds.count("mixup") > 20 and kinds.count("cutmix") > 20


def test_accuracy_counts_the_class_of_largest_target_probability():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    assert correct(logits, torch.tensor([0, 1])) == 1
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3]])  # dominant labels 0 and 1
    assert correct(logits, soft) == 1


@pytest.mark.parametrize("setting, says", [
    ({"label_smoothing": 1.0}, "augment.label_smoothing=1.0"),
    ({"mixup_alpha": -1}, "augment.mixup_alpha=-1"),
    ({"policy": "autoaugment"}, "augment.policy=autoaugment: use one of randaugment"),
    ({"prob": 2}, "augment.prob=2: use a probability")])
def test_a_bad_setting_is_one_line(setting, says):
    with pytest.raises(ConfigError, match=says):
        Recipe.from_config(setting)


def images(n: int = 12) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(4, (n,), generator=g)
    recipe = Recipe(label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0,
                    policy="randaugment")
    return DeviceData(x, y, (120.0,) * 3, (60.0,) * 3, 4, shuffle=True, drop_last=True,
                      crop_padding=2, flip=True, recipe=recipe, num_classes=4)


def test_the_same_generator_state_gives_the_same_augmented_batches_and_another_does_not():
    data = images()
    first = list(data.batches(torch.Generator().manual_seed(5)))
    again = list(data.batches(torch.Generator().manual_seed(5)))
    other = list(data.batches(torch.Generator().manual_seed(6)))
    for (ax, ay), (bx, by) in zip(first, again, strict=True):
        assert torch.equal(ax, bx) and torch.equal(ay, by)
        assert ay.shape == (4, 4) and torch.allclose(ay.sum(1), torch.ones(4))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_the_policy_draws_per_image_and_leaves_the_global_generator_alone():
    data = images()
    draw = next(data.draws(torch.Generator().manual_seed(1)))
    state = torch.random.get_rng_state()
    raw = data.x[draw.idx]
    out = data.recipe.transform(raw, draw.mix)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert out.dtype == torch.uint8 and out.shape == raw.shape
    assert torch.equal(out, data.recipe.transform(raw, draw.mix))
    same = data.recipe.transform(raw[:1].expand(4, -1, -1, -1).contiguous(), draw.mix)
    assert not all(torch.equal(same[0], same[i]) for i in range(1, 4))  # its own op per image


def test_a_stacks_slots_each_mix_within_their_own_batch():
    """Several slots' draws assembled at once give each slot the batch it would get alone."""
    data = images()
    draws = [next(data.draws(torch.Generator().manual_seed(s))) for s in (0, 1, 2)]
    together = data.assemble(draws)
    alone = [data.assemble([d]) for d in draws]
    assert torch.equal(together[0], torch.cat([a[0] for a in alone]))
    assert torch.equal(together[1], torch.cat([a[1] for a in alone]))
    out = (torch.empty(12, 3, 8, 8), torch.empty(12, 4))
    data.assemble(draws, out=out)
    assert torch.equal(out[0], together[0]) and torch.equal(out[1], together[1])


def test_a_policy_on_float_data_is_one_line():
    with pytest.raises(ConfigError, match=r"augment\.policy=randaugment transforms 8-bit"):
        DeviceData(torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.long), (0.0,), (1.0,),
                   2, True, True, recipe=Recipe(policy="randaugment"), num_classes=2)
