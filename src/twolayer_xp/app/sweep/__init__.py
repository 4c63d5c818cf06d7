"""``twolayer-xp sweep``: Optuna studies whose trials train K at a time as one Population.

config (what a worker searches), study (storage, slots, heartbeats), worker (the loop each
worker runs: ``run_sweep``), report (trials.csv, best/, the summary line), command (the flags).
"""

from twolayer_xp.app.sweep.config import SweepConfig
from twolayer_xp.app.sweep.worker import run_sweep

__all__ = ["SweepConfig", "run_sweep"]
