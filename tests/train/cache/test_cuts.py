"""train/cuts.py: which cut a phase's frozen prefix gets, in the documented order, and why none."""

import torch

from tests.helpers import TinyNet, tiny_vit
from transferkit.model.freeze import freeze, freeze_backbone
from transferkit.train.cache.cuts import Chosen, choose_cut


def cut_of(model, head):
    torch.manual_seed(0)
    return choose_cut(model, head, torch.rand(4, 3, 16, 16), (3, 16, 16), prep=lambda images: images)


def test_a_sequential_prefix_is_cut_at_the_dry_runs_boundary():
    model = TinyNet(num_classes=3)
    freeze(model, ["conv1", "bn1"])
    chosen = cut_of(model, "fc")
    assert isinstance(chosen, Chosen) and chosen.kind == "boundary" and chosen.boundary.path == "relu"


def test_a_vit_with_only_its_head_training_is_cut_at_timms_pre_logits():
    model = tiny_vit(num_classes=3)
    freeze_backbone(model, head="head")
    chosen = cut_of(model, "head")
    assert isinstance(chosen, Chosen) and chosen.kind == "pre_logits"


def test_a_vit_whose_last_block_trains_is_cut_at_that_blocks_input():
    model = tiny_vit(num_classes=3)
    freeze(model, ["patch_embed", "cls_token", "pos_embed", "blocks.0"])
    chosen = cut_of(model, "head")
    assert isinstance(chosen, Chosen) and chosen.kind == "input" and chosen.boundary.path == "blocks.1"


def test_nothing_frozen_first_means_no_cut_and_says_why():
    assert cut_of(TinyNet(num_classes=3), "fc") == "the first layer to run already trains"
