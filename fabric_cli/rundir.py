"""The run directory's layout (RunPaths) and the bundled data's place. No torch here.

See the README's 'Run directory' section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fabric_cli.errors import InputError

DEFAULT_RUN = "fabric-run"


# The probe's pictures (--plot) in a run's probe/ folder, by what they show; {head} is the chosen head.
PROBE_PICTURES = {"heads": "heads.png", "attention": "head-{head}.png", "emergence": "emergence.png",
                  "attribution": "attribution.png", "ablation": "ablation.png"}


@dataclass(frozen=True)
class RunPaths:
    """Where one model's life is kept. See the README's 'Run directory' section."""

    root: Path

    @classmethod
    def resolve(cls, run: str | os.PathLike | None = None) -> "RunPaths":
        """--run, else $FABRIC_RUN, else ./fabric-run. A file there is an InputError: a run is a folder."""
        root = Path(run or os.environ.get("FABRIC_RUN") or DEFAULT_RUN)
        if root.exists() and not root.is_dir():
            raise InputError(f"--run {root} is a file; a run is a folder (default ./fabric-run): "
                             f"name the folder, e.g. the one holding tokenizer.json and checkpoints/")
        return cls(root)

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> "RunPaths | None":
        """The run a checkpoint file lies in (RUN/checkpoints/NAME.safetensors -> RUN), else None.

        RUN must hold something `fabric` wrote there besides checkpoints (metrics.jsonl, a tokenizer
        or tokens): any folder named checkpoints is not a run, and its parent not a place to read
        metrics from or write a probe report into.
        """
        p = Path(checkpoint)
        if p.parent.name != "checkpoints":
            return None
        run = cls(p.parent.parent)
        return run if run.metrics.is_file() or run.tokenizer.is_file() or run.meta.is_file() else None

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def train_bin(self) -> Path:
        return self.tokens / "train.bin"

    @property
    def val_bin(self) -> Path:
        return self.tokens / "val.bin"

    @property
    def meta(self) -> Path:
        return self.tokens / "meta.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest.safetensors"

    @property
    def latest_state(self) -> Path:
        return self.checkpoints / "latest.state.safetensors"

    def snapshot(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}.safetensors"

    def snapshots(self) -> list[Path]:
        """Snapshots sorted by step."""
        return sorted(self.checkpoints.glob("step-*.safetensors"))

    def training_outputs(self) -> list[Path]:
        """What training writes and what was made from its checkpoints, which starting over deletes:
        the checkpoint, its state, snapshots, metrics, and the probe's report and pictures and the
        demo's summary in this run (a probe's --report elsewhere is the user's to keep)."""
        pictures = [p for name in PROBE_PICTURES.values() for p in self.probe.glob(name.format(head="*"))]
        snapshot_reports = list(self.probe.glob("report-step-*"))  # probe_report_for a snapshot, and its pictures
        made_from = [self.probe_report, *pictures, *snapshot_reports, self.root / "demo.json"]
        return [self.latest, self.latest_state, self.metrics, *self.snapshots(), *made_from]

    def remove_training_outputs(self) -> None:
        """Start the run over: delete training_outputs (a new tokenizer, or train --restart)."""
        for p in self.training_outputs():
            p.unlink(missing_ok=True)

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def probe(self) -> Path:
        return self.root / "probe"

    @property
    def probe_report(self) -> Path:
        return self.probe / "report.json"

    def probe_report_for(self, checkpoint: Path | None) -> Path:
        """Where a probe of `checkpoint` reports: report.json for the latest (None), and
        report-step-000100.json for a snapshot of this run, which leaves the latest's report alone."""
        if checkpoint is not None and Path(checkpoint).parent.resolve() == self.checkpoints.resolve() \
                and Path(checkpoint).name.startswith("step-"):
            return self.probe / f"report-{Path(checkpoint).stem}.json"
        return self.probe_report


# --------------------------------------------------------------------------- bundled data


def data_dir() -> Path:
    """The bundled data folder: `fabric_cli/data` in an installed wheel, `data/` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "data", here.parent / "data"):
        if candidate.is_dir():
            return candidate
    raise InputError("the bundled data folder is missing from this install; reinstall neural-fabric")


def bundled_corpus() -> Path:
    """The Chronicles corpus that ships with the package (a blank line separates stories)."""
    return data_dir() / "chronicles.txt"


def probes_dir() -> Path:
    return data_dir() / "probes"
