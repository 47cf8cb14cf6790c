"""Everything a TRL run needs, built in code: no model hub, no network.

A random-weight ~1M-parameter causal LM from a small ``transformers`` config, a character-level
tokenizer made with ``tokenizers`` (pad and eos tokens), an in-memory prompt dataset and a Python
reward function. Shared by the TRL tests, the example and the TRL row of the overhead bench.
"""

from __future__ import annotations

import dataclasses
import os
import string
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ALPHABET = string.ascii_lowercase + string.digits + " +=?"
SPECIALS = ["<pad>", "<eos>", "<unk>"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one id per character, ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(ALPHABET))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def make_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A random-weight Llama of about 1M parameters (vocab ~43, hidden 128, 4 layers)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def make_dataset(n: int = 64) -> Dataset:
    """Prompts like ``"3+4="``; the answer is in ``answer`` (passed to reward functions as a column)."""
    rows = [{"prompt": f"{i % 10}+{(i * 7) % 10}=", "answer": str(i % 10 + (i * 7) % 10)} for i in range(n)]
    return Dataset.from_list(rows)


def reward_digits(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """Dense, varied reward: share of characters that are digits, plus 1 for the exact answer."""
    out = []
    for text, ans in zip(completions, answer, strict=True):
        digits = sum(c.isdigit() for c in text) / max(len(text), 1)
        out.append(digits + (1.0 if text.strip().startswith(ans) else 0.0))
    return out


def grpo_args(output_dir: str | Path, **overrides: Any):
    """A ``GRPOConfig`` tuned for a fast, deterministic CPU run; ``overrides`` win."""
    from trl import GRPOConfig

    base: dict[str, Any] = dict(
        output_dir=str(output_dir),
        loss_type="sapo",
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_generations=4,
        max_completion_length=8,
        num_iterations=1,
        learning_rate=5e-3,
        max_steps=4,
        beta=0.0,
        temperature=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    # Gradient checkpointing defaults to on in GRPOConfig and only slows a CPU run down; transformers 5
    # renamed the field (the old name still works but warns).
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    base["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = False
    base.update(overrides)
    return GRPOConfig(**base)


def make_trainer(output_dir: str | Path, *, seed: int = 0, trainer_cls: Any = None, dataset: Dataset | None = None,
                 reward: Any = None, **overrides: Any):
    """A ready ``GRPOTrainer`` (or ``trainer_cls``) on the tiny model; ``overrides`` go to ``GRPOConfig``.

    ``dataset`` and ``reward`` replace :func:`make_dataset` and :func:`reward_digits` (the detection
    corpus trains on a task that is not solved within its run)."""
    from transformers import set_seed
    from trl import GRPOTrainer

    torch.set_num_threads(1)
    set_seed(seed)
    tok = make_tokenizer()
    model = make_model(tok, seed=seed)
    args = grpo_args(output_dir, seed=seed, **overrides)
    if args.beta != 0.0:
        # With beta != 0 TRL rebuilds the reference model from the model's saved path.
        model_dir = Path(output_dir) / "init-model"
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
        model.config._name_or_path = str(model_dir)
        model.name_or_path = str(model_dir)
    cls = trainer_cls or GRPOTrainer
    evaluates = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
    return cls(
        model=model,
        reward_funcs=reward or reward_digits,
        args=args,
        train_dataset=dataset if dataset is not None else make_dataset(),
        eval_dataset=make_dataset(4) if evaluates else None,
        processing_class=tok,
    )
