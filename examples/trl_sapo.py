"""Train a tiny model with TRL's SAPO loss, offline, and stream its stability statistics.

    python examples/trl_sapo.py --server http://127.0.0.1:8321          # a running `sapo-monitor serve`
    python examples/trl_sapo.py --spool-dir /tmp/sapo-spool             # offline; upload later with
                                                                        # `sapo-monitor upload /tmp/sapo-spool`

Everything is built in code (no model hub): a random-weight ~1M-parameter Llama, a character-level
tokenizer, a dataset of "a+b=" prompts and a reward for digits. The one line that matters for your
own runs is ``client.attach(trainer, ...)`` before ``trainer.train()``.
Needs the ``[trl]`` extra: ``pip install 'sapo-monitor[trl]'``.
"""

from __future__ import annotations

import argparse
import os
import string
import tempfile
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["<pad>", "<eos>", "<unk>", *string.ascii_lowercase, *string.digits, " ", "+", "=", "?"]
    core = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")  # one token per character
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def build_model(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def reward_digits(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """Share of digits in the completion, plus 1 when it starts with the right sum."""
    return [
        sum(c.isdigit() for c in text) / max(len(text), 1) + float(text.strip().startswith(ans))
        for text, ans in zip(completions, answer, strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=os.environ.get("SAPO_MONITOR_SERVER"),
                        help="sapo-monitor service URL (env SAPO_MONITOR_SERVER); omit to spool offline")
    parser.add_argument("--spool-dir", default=None, help="offline spool folder (used when --server is absent)")
    parser.add_argument("--token", default=os.environ.get("SAPO_MONITOR_TOKEN"),
                        help="API token of the service, if it requires one (env SAPO_MONITOR_TOKEN)")
    parser.add_argument("--project", default="examples", help="project the run is filed under")
    parser.add_argument("--run", default="trl-sapo-tiny", help="run id (re-using one resumes that run)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps to train")
    parser.add_argument("--loss-type", default="sapo", help="TRL loss_type: sapo, grpo, dapo, ...")
    parser.add_argument("--num-iterations", type=int, default=2,
                        help="updates per rollout batch; 1 is on-policy (ratios are exactly 1)")
    ns = parser.parse_args(argv)

    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from sapo_monitor import client

    torch.set_num_threads(1)  # tiny model: more threads only fight over the cores
    set_seed(0)
    tokenizer = build_tokenizer()
    dataset = Dataset.from_list(
        [{"prompt": f"{i % 10}+{(i * 7) % 10}=", "answer": str(i % 10 + (i * 7) % 10)} for i in range(64)]
    )
    out_dir = tempfile.mkdtemp(prefix="trl-sapo-")
    # GRPOConfig turns gradient checkpointing on by default (only slower for a tiny model);
    # transformers 5 renamed the field.
    fields = GRPOConfig.__dataclass_fields__
    no_ckpt = {"activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing": False}
    args = GRPOConfig(
        output_dir=out_dir, loss_type=ns.loss_type, num_iterations=ns.num_iterations,
        per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        learning_rate=5e-3, max_steps=ns.steps, beta=0.0, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, **no_ckpt,
    )
    trainer = GRPOTrainer(model=build_model(tokenizer), reward_funcs=reward_digits, args=args,
                          train_dataset=dataset, processing_class=tokenizer)

    spool_dir = ns.spool_dir or (None if ns.server else tempfile.mkdtemp(prefix="sapo-spool-"))
    monitor = client.attach(trainer, run=ns.run, project=ns.project, server=ns.server, token=ns.token,
                            spool_dir=spool_dir)
    trainer.train()
    monitor.close()
    last = {k: v for k, v in trainer.state.log_history[-2].items() if k.startswith("sapo_monitor/")}
    print(f"trained {trainer.state.global_step} steps; last mirrored statistics: {last}")
    print(f"sent to {ns.server}" if ns.server else f"spooled to {spool_dir}; send with: sapo-monitor upload {spool_dir}")


if __name__ == "__main__":
    main()
