"""Where the drift code lives: the actor file is a thin Ray shell; the monitor's logic, the launchers, the MLflow and
audit sinks and the live loop's wiring are in `tradesys/train/`, and the names other modules import from
`tradesys.actors.drift` are the same objects as there.

Reference: a fresh interpreter's ``sys.modules`` (the pure core must import without Ray) and the files' sizes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_monitor_core_and_live_wiring_import_without_ray() -> None:
    code = ("import sys; import tradesys.train.drift_monitor, tradesys.train.drift_tracking, tradesys.train.live_drift;"
            " print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_actor_file_is_a_thin_shell_and_keeps_its_names() -> None:
    import tradesys.actors.drift as shell
    from tradesys.train import drift_monitor, drift_tracking, launch, live_drift

    assert len((ROOT / "tradesys/actors/drift.py").read_text().splitlines()) <= 300
    assert shell.DriftMonitorCore is drift_monitor.DriftMonitorCore
    assert shell.MonitorConfig is drift_monitor.MonitorConfig
    assert shell.monitor_kwargs is live_drift.monitor_kwargs and shell.compact_status is live_drift.compact_status
    assert shell.RayTaskLauncher is launch.RayTaskLauncher and shell.JobState is launch.JobState
    assert shell.MlflowDriftLogger is drift_tracking.MlflowDriftLogger and shell.JsonlAudit is drift_tracking.JsonlAudit
    for name in ("DriftMonitor", "monitor_kwargs", "compact_status", "MonitorFeed"):  # the supervisor's and children's
        assert name in shell.__all__ and hasattr(shell, name)
    assert launch.default_train_script() == ROOT / "jobs" / "train.py"
