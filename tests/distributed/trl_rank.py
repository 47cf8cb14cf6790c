"""One process of the 2-process TRL test (started by torchrun): attach on every process, train,
keep what this process's adapter observed (and, on rank 0, TRL's mirrored log values)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sapo_monitor.client.adapters.trl import MIRROR_PREFIX

from sapo_monitor import client
from tests.trl.capture import Recorder
from tests.trl.tinyrl import make_trainer


def main(out: Path, server: str) -> None:
    trainer = make_trainer(out / "trl", num_iterations=2, max_steps=3)
    rank = trainer.accelerator.process_index
    monitor = client.attach(trainer, run="trl-dp", project="dp", server=server, spool_dir=out / f"spool{rank}",
                            strict=True)
    recorder = Recorder(monitor)
    trainer.train()
    monitor.close(timeout=30)
    torch.save(recorder.steps, out / f"observed-r{rank}.pt")
    if rank == 0:
        mirrored = {h["step"]: {k: v for k, v in h.items() if k.startswith(MIRROR_PREFIX)}
                    for h in trainer.state.log_history if "step" in h and "train_runtime" not in h}
        (out / "rank0.json").write_text(json.dumps({"mirrored": mirrored,
                                                    "stats_config": dataclasses.asdict(monitor.stats_config)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
