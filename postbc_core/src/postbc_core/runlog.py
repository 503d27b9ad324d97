"""The run logger: a run directory's training curves, as TensorBoard events (<run>/tb) and one JSON line per logged
step (<run>/metrics.jsonl).

Training (training/loop.py) and finetuning (rl/finetuner.py, also under the ROS finetune manager) both log through it,
so it sits below both packages and neither imports the other for it. It imports torch's TensorBoard writer only when
a run directory is given, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


class RunLogger:
    """TensorBoard + metrics.jsonl for one run, written by one process.

    run_dir None or is_main False (a DDP rank other than 0): logs nothing. `progress` says whether the caller shows a
    progress bar (training/loop.py's tqdm; off on other ranks too).
    """

    def __init__(self, run_dir: Path | None, *, is_main: bool = True, progress: bool = True):
        self.progress = progress and is_main
        self.writer = None
        self.jsonl = None
        if is_main and run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(run_dir / TB_DIR))
            self.jsonl = open(run_dir / METRICS_FILE, "a")

    def scalars(self, tag: str, step: int, values: dict[str, float]) -> None:
        """One row {"tag", "step", **values} in metrics.jsonl (flushed: a killed run keeps it) and one TensorBoard
        scalar "<tag>/<name>" per value."""
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(f"{tag}/{k}", v, step)
        self.jsonl.write(json.dumps({"tag": tag, "step": step, **values}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.jsonl.close()
