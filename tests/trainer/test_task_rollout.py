"""The digit task's prompts, masks and graded reward; group advantages; the policy's shapes."""

from __future__ import annotations

import pytest
import torch
from sapo_monitor.trainer.model import ModelConfig, Policy
from sapo_monitor.trainer.rollout import generate_rollout, group_advantages, sequence_logprobs
from sapo_monitor.trainer.task import DigitTask

TASK = DigitTask("reverse", base=10, min_digits=3, max_digits=5)
PAD, EOS = TASK.pad, TASK.eos


def test_prompts_are_left_padded_and_targets_reversed() -> None:
    batch = TASK.sample(64, torch.Generator().manual_seed(0))
    assert batch.prompts.shape == (64, TASK.prompt_len)
    assert set(batch.lengths.tolist()) <= {3, 4, 5}
    for prompt, target, n in zip(batch.prompts, batch.targets, batch.lengths.tolist(), strict=True):
        assert prompt[-1] == TASK.sep and prompt[-n - 2] == TASK.bos
        assert torch.all(prompt[: -n - 2] == PAD)
        assert torch.equal(target[:n], prompt[-n - 1 : -1].flip(0))
        assert torch.all(target[n:] == PAD)


def test_correct_answers_score_one() -> None:
    for name in ("reverse", "sort", "copy"):
        task = DigitTask(name)
        batch = task.sample(32, torch.Generator().manual_seed(1))
        answers = task.answers(batch)
        assert torch.all(task.reward(answers, batch.targets, batch.lengths) == 1.0)


def test_reward_gives_partial_credit_per_position() -> None:
    targets = torch.tensor([[3, 2, 1, PAD, PAD]] * 5)
    lengths = torch.tensor([3] * 5)
    responses = torch.tensor(
        [
            [3, 2, 1, EOS, PAD, PAD],  # exact: 1
            [3, 9, 1, EOS, PAD, PAD],  # one wrong digit: 2/3
            [3, 2, EOS, PAD, PAD, PAD],  # too short: 2/3
            [3, 2, 1, 5, 5, EOS],  # two extra digits: 3/5
            [EOS, 3, 2, 1, EOS, PAD],  # nothing before EOS: 0
        ]
    )
    got = TASK.reward(responses, targets, lengths)
    assert torch.allclose(got, torch.tensor([1.0, 2 / 3, 2 / 3, 3 / 5, 0.0]))


def test_response_mask_covers_tokens_up_to_first_eos() -> None:
    responses = torch.tensor([[1, 2, EOS, 4, EOS, 6], [1, 2, 3, 4, 5, 6], [EOS, 1, 1, 1, 1, 1]])
    expected = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(TASK.response_mask(responses), expected)


def test_group_advantages_are_standardised_within_groups() -> None:
    rewards = torch.tensor([0.0, 1.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2])
    adv = group_advantages(rewards, group_size=4)
    g0 = rewards[:4]
    expected0 = (g0 - g0.mean()) / (g0.std(unbiased=False) + 1e-6)
    assert torch.allclose(adv[:4], expected0)
    assert torch.all(adv[4:] == 0)  # a group of equal rewards carries no signal


def test_sequence_logprobs_pick_the_sampled_tokens() -> None:
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[1, 2, 3, 4, 5], [6, 5, 4, 3, 2]])
    logp, entropy = sequence_logprobs(logits, tokens, prompt_len=2)
    assert logp.shape == entropy.shape == (2, 3)
    full = torch.log_softmax(logits, -1)
    assert logp[0, 0] == full[0, 1, 3] and logp[1, 2] == full[1, 3, 2]
    assert torch.all(entropy > 0) and torch.all(entropy <= torch.log(torch.tensor(7.0)) + 1e-6)


@pytest.mark.parametrize("moe", [False, True])
def test_rollout_shapes_and_old_logprobs(moe: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=TASK.vocab_size, block_size=TASK.prompt_len + TASK.response_len, moe=moe, router_noise=1.0
    )
    policy = Policy(cfg)
    ro = generate_rollout(
        policy,
        TASK,
        n_prompts=3,
        group_size=4,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
        rollout_router_noise=moe,
    )
    b, t = 12, TASK.response_len
    assert ro.responses.shape == ro.mask.shape == ro.logp_old.shape == ro.logp_rollout.shape == (b, t)
    assert ro.rewards.shape == ro.advantages.shape == (b,)
    assert torch.all(ro.logp_old[ro.mask == 0] == 0) and torch.all(ro.logp_old[ro.mask > 0] < 0)
    # The group's prompts are repeated G times, consecutively.
    prompts = ro.tokens[:, : TASK.prompt_len].view(3, 4, -1)
    assert torch.all(prompts == prompts[:, :1])
    # logp_old is the clean training-precision forward on the same tokens.
    out = policy(ro.tokens)
    again, _ = sequence_logprobs(out.logits, ro.tokens, TASK.prompt_len)
    assert torch.allclose(again * ro.mask, ro.logp_old, atol=1e-6)
    if moe:
        assert ro.experts_old is not None and ro.experts_old.shape == (cfg.n_layer, b, t, cfg.top_k)
        # With router noise the rollout engine disagrees with the clean forward somewhere.
        assert not torch.allclose(ro.logp_rollout, ro.logp_old, atol=1e-4)
    else:
        assert ro.experts_old is None
        assert torch.allclose(ro.logp_rollout, ro.logp_old, atol=1e-5)


def test_bf16_rollout_engine_shows_a_small_mismatch() -> None:
    torch.manual_seed(0)
    policy = Policy(ModelConfig(vocab_size=TASK.vocab_size, block_size=TASK.prompt_len + TASK.response_len))
    ro = generate_rollout(
        policy,
        TASK,
        n_prompts=4,
        group_size=4,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
        rollout_bf16=True,
    )
    diff = (ro.logp_rollout - ro.logp_old)[ro.mask > 0].abs()
    assert 0 < diff.max() < 0.1
    assert next(policy.parameters()).dtype == torch.float32  # the policy itself is untouched
