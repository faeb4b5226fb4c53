"""Measure search throughput (trained trials per hour) by worker count and storage.

Usage:
    python scripts/bench_workers.py [--workers 1 2 4] [--trials 16] [--postgres URL]
        [-- SEARCH ARGS...]

For each worker count it runs ``python -m regnas.search --workers N`` on a new study in a new
SQLite file and, with --postgres, on a new study in that PostgreSQL database. It prints one row
per run: wall seconds, trained trials (complete and pruned), rejected samples, trained trials per
hour, and how often the output mentions a locked database. Arguments after ``--`` go to every
search. The default ones make short trials (1 epoch on 4,000 images), so they load the storage
more than the main job does. Every run starts fresh processes, so each new network's compile time
counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys
import tempfile
import time
import uuid

import optuna

from regnas.trials import is_rejected


SHORT_TRIALS = ["--epochs", "1", "--train-size", "4000", "--val-size", "1000"]


def run(storage: str, workers: int, trials: int, search_args: list[str]) -> dict[str, object]:
    study = f"bench-workers-{workers}-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable,
        "-m",
        "regnas.search",
        "--study",
        study,
        "--storage",
        storage,
        "--workers",
        str(workers),
        "--trials",
        str(trials),
        *search_args,
    ]

    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{output}")

    study_trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    # Rejected samples are stored as pruned trials but were never trained, so count them apart.
    states = [trial.state for trial in study_trials if not is_rejected(trial)]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    pruned = states.count(optuna.trial.TrialState.PRUNED)
    return {
        "storage": storage.split(":", 1)[0],
        "workers": workers,
        "wall_seconds": round(wall, 1),
        "complete": complete,
        "pruned": pruned,
        "rejected": len(study_trials) - len(states),
        "trials_per_hour": round((complete + pruned) / wall * 3600, 1),
        "locked_messages": output.count("database is locked"),
    }


def main() -> None:
    argv = sys.argv[1:]
    search_args = SHORT_TRIALS
    if "--" in argv:
        split = argv.index("--")
        argv, search_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=16, help="finished trials per run")
    parser.add_argument("--postgres", default=None, help="PostgreSQL URL for the second series")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="regnas-bench-") as directory:
        storages = [f"sqlite:///{Path(directory, 'bench.db')}"]
        if args.postgres:
            storages.append(args.postgres)
        print(f"search arguments: {' '.join(search_args)}; {args.trials} trials per run")
        print("storage     workers  wall s  complete  pruned  rejected  trials/hour  locked")
        for storage in storages:
            for workers in args.workers:
                row = run(storage, workers, args.trials, search_args)
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    print(
                        f"{row['storage']:<10}  {workers:>7}  {row['wall_seconds']:>6}  "
                        f"{row['complete']:>8}  {row['pruned']:>6}  {row['rejected']:>8}  "
                        f"{row['trials_per_hour']:>11}  {row['locked_messages']:>6}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
