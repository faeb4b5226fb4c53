"""Study-level behaviour: budgets, deduplication, objectives, the space fingerprint, warm start."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import optuna
import pytest
from test_search import load, tiny_config

from regnas import workers
from regnas.engine import Trainer
from regnas.results import export_best, export_pareto
from regnas.space import SPACE_NAMES, AnyNetSpace, make_space
from regnas.spec import AnyNetSpec
from regnas.study import (
    DUPLICATE_KEY,
    INTERRUPTED,
    REJECTED_KEY,
    SETTINGS_KEY,
    SearchConfig,
    count_finished,
    make_sampler,
    open_study,
    pareto_front,
    rejection_reasons,
    trial_counts_text,
)
from regnas.warmstart import WARM_START_KEY, enqueue_zoo, zoo_trials

from conftest import TINY_SPACE, requires_real_data


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[AnyNetSpec]:
    """Record the architecture of every compile."""
    specs: list[AnyNetSpec] = []
    original = Trainer.compile

    def counting_compile(self: Trainer) -> float:
        specs.append(self.spec)
        return original(self)

    monkeypatch.setattr(Trainer, "compile", counting_compile)
    return specs


def test_duplicate_architecture_reuses_result(
    idx_dir: Path, tmp_path: Path, compiled: list[AnyNetSpec]
) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=3, epochs=1)
    study = open_study(config, f"sqlite:///{config.storage}")
    params = {"depth": 1, "w0": 8, "wa": 8.0, "wm": 2.0, "group_w": 8, "bot_mul": 1.0}
    # The same network from other parameters: one block, so wa and wm play no part.
    same = {**params, "wa": 12.0, "wm": 2.5}
    for values in (params, params, same):
        study.enqueue_trial(values)

    workers.run_search(config, workers=1)

    trials = load(config).trials
    assert len(compiled) == 1
    assert [trial.user_attrs.get(DUPLICATE_KEY) for trial in trials] == [None, 0, 0]
    assert trials[1].value == trials[2].value == trials[0].value
    assert "compile_seconds" not in trials[1].user_attrs
    assert count_finished(load(config)) == 3


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"max_mflops": 0.6}, "above --max-mflops 0.6"),
        ({"min_mflops": 0.6}, "below --min-mflops 0.6"),
        ({"max_params": 4000}, "above --max-params 4000"),
    ],
)
def test_budgets_reject_before_compile(
    idx_dir: Path,
    tmp_path: Path,
    compiled: list[AnyNetSpec],
    overrides: dict[str, float],
    reason: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=3, epochs=1, **overrides)
    caplog.set_level(logging.INFO, logger="regnas")

    workers.run_search(config, workers=1)

    # A lone worker leaves the rejected count to the summary, so it appears once.
    assert "rejected before training" in capsys.readouterr().out
    assert not [r for r in caplog.records if "This worker rejected" in r.getMessage()]
    trials = load(config).trials
    rejected = [t for t in trials if REJECTED_KEY in t.user_attrs]
    trained = [t for t in trials if REJECTED_KEY not in t.user_attrs]
    assert rejected, "this budget should reject some samples of the tiny space"
    assert all(reason in t.user_attrs[REJECTED_KEY] for t in rejected)
    assert all(max(t.constraints.values()) > 0 for t in rejected)
    assert all(max(t.constraints.values()) <= 0 for t in trained)
    assert len(compiled) == len(trained) - sum(DUPLICATE_KEY in t.user_attrs for t in trained)
    for trial in trained:
        spec = AnyNetSpec.from_dict(trial.user_attrs["architecture"])
        attrs = trial.user_attrs
        assert rejection_reasons(config, spec, attrs["mflops"], attrs["params"]) == []


def test_counts_keep_interrupted_trials_apart() -> None:
    study = optuna.create_study()
    fail = optuna.trial.TrialState.FAIL
    for reason in (INTERRUPTED, INTERRUPTED, "training loss is nan in epoch 2"):
        study.add_trial(optuna.trial.create_trial(state=fail, user_attrs={"fail_reason": reason}))

    text = trial_counts_text(study)

    assert text.endswith("1 trial failed, and 2 trials were interrupted.")


def test_empty_budget_band() -> None:
    with pytest.raises(ValueError, match=r"--min-mflops 3.0 is not below --max-mflops 2.0"):
        SearchConfig(min_mflops=3.0, max_mflops=2.0)


def test_max_params_below_space_fails_early(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, max_params=100)

    with pytest.raises(ValueError, match=r"--max-params 100 is below the smallest"):
        workers.run_search(config, workers=1)
    assert not Path(config.storage).exists()


def test_multi_objective_study(
    idx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=3, epochs=2, objectives=("error", "mflops"))

    workers.run_search(config, workers=1)

    out = capsys.readouterr().out
    assert "pruning off (Optuna does not prune multi-objective studies)" in out
    study = load(config)
    assert study.metric_names == ["error", "mflops"]
    assert len(study.directions) == 2
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert trial.values[0] == pytest.approx(1 - trial.user_attrs["val_accuracy"])
        assert trial.values[1] == trial.user_attrs["mflops"]
        assert trial.user_attrs["epochs_trained"] == 2  # never pruned
    assert export_best(config.study, config.storage)["metrics"]["val_accuracy"] > 0


@pytest.mark.parametrize(
    "objectives",
    [("mflops",), ("accuracy", "mflops"), ("error", "error"), ("error", "flops"), ()],
)
def test_bad_objectives(objectives: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="--objectives"):
        SearchConfig(objectives=objectives)


def test_pareto_front_of_single_objective_study(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="front", storage=f"sqlite:///{tmp_path / 'f.db'}")
    points = [(1.0, 0.80), (2.0, 0.85), (3.0, 0.84), (4.0, 0.90), (0.5, 0.70), (2.5, 0.85)]
    spec = make_space("regnetx").smallest_spec(16, 1).to_dict()
    for mflops, accuracy in points:
        attrs = {"mflops": mflops, "val_accuracy": accuracy, "architecture": spec}
        study.add_trial(optuna.trial.create_trial(value=accuracy, user_attrs=attrs))

    front = [(t.user_attrs["mflops"], t.user_attrs["val_accuracy"]) for t in pareto_front(study)]

    assert front == [(0.5, 0.70), (1.0, 0.80), (2.0, 0.85), (4.0, 0.90)]
    documents = export_pareto("front", str(tmp_path / "f.db"))
    assert [document["metrics"]["mflops"] for document in documents] == [0.5, 1.0, 2.0, 4.0]


def test_changed_space_refuses_resume(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=1, epochs=1)
    workers.run_search(config, workers=1)
    other = dataclasses.replace(TINY_SPACE, depth=(1, 3))

    with pytest.raises(ValueError) as error:
        workers.run_search(dataclasses.replace(config, space=other, trials=2), workers=1)

    message = str(error.value)
    assert "Study 'tiny' was created with other settings" in message
    assert "space.depth: stored [1, 2], now [1, 3]" in message
    assert "--space regnetx and a --space-config file" in message
    assert "pass a new --study name" in message
    assert count_finished(load(config)) == 1
    assert len(load(config).trials) == 1


def test_other_space_name_refuses_resume(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    open_study(SearchConfig(study="s"), storage)

    with pytest.raises(ValueError, match=r"space: stored 'regnetx', now 'anynet_c'\)"):
        open_study(SearchConfig(study="s", space=make_space("anynet_c")), storage)
    with pytest.raises(ValueError, match=r"objectives: stored \['accuracy'\], now \['error'"):
        open_study(SearchConfig(study="s", objectives=("error", "mflops")), storage)


def test_other_precision_refuses_resume(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    open_study(SearchConfig(study="s"), storage)

    with pytest.raises(ValueError) as error:
        open_study(SearchConfig(study="s", precision="bfloat16"), storage)

    assert "precision: stored 'float32', now 'bfloat16'" in str(error.value)
    assert "--precision float32" in str(error.value)


def test_study_from_first_release_resumes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'v1.db'}"
    config = SearchConfig(study="v1")
    study = optuna.create_study(study_name="v1", storage=storage, direction="maximize")
    settings = config.study_settings()
    for key in ("min_mflops", "max_params", "objectives", "precision"):
        del settings[key]
    del settings["space"]["name"]
    study.set_user_attr(SETTINGS_KEY, settings)
    study.add_trial(optuna.trial.create_trial(value=0.5))

    assert open_study(config, storage).study_name == "v1"


@pytest.mark.parametrize("name", ["regnetx", "regnety", "anynet_c", "anynet_e"])
def test_zoo_trials_fit_budget_and_space(name: str) -> None:
    config = SearchConfig(space=make_space(name), max_mflops=5.0)

    trials, unfit = zoo_trials(config)

    assert trials, unfit
    assert len({trial.key for trial in trials}) == len(trials)
    family = "RegNetY" if name == "regnety" else "RegNetX"
    assert all(trial.name.startswith(family) for trial in trials)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler())
    for trial in trials:
        assert trial.mflops <= 5.0
        # The queued parameters lie inside the space: a fixed trial samples them back exactly.
        fixed = optuna.trial.FixedTrial(trial.params)
        spec, _ = config.space.sample(fixed, config.stem_w, config.stem_stride)
        assert rejection_reasons(config, spec, trial.mflops, 0) == []
        assert study is not None


def test_warm_start_queues_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = SearchConfig(study="warm", storage=str(tmp_path / "w.db"))
    study = open_study(config, f"sqlite:///{config.storage}")

    queued = enqueue_zoo(study, config)
    again = enqueue_zoo(study, config)

    assert queued and again == []
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs[WARM_START_KEY] for t in waiting] == [t.name for t in queued]
    noun = "network" if len(queued) == 1 else "networks"
    assert f"queued {len(queued)} model-zoo {noun}" in capsys.readouterr().out


def test_anynet_search_stores_stage_parameters(idx_dir: Path, tmp_path: Path) -> None:
    space = AnyNetSpace(name="anynet_b", stages=2, depth=(1, 1), width=(8, 16), group_w=(8,))
    config = tiny_config(idx_dir, tmp_path, trials=2, epochs=1, space=space)

    workers.run_search(config, workers=1)

    trial = load(config).trials[0]
    assert set(trial.params) == {
        "depth_s1",
        "width_s1",
        "group_w_s1",
        "depth_s2",
        "width_s2",
        "group_w_s2",
        "bot_mul",
    }
    assert trial.user_attrs["stage_depths"] == [1, 1]


@requires_real_data
@pytest.mark.slow
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_every_space_searches_real_data(name: str, tmp_path: Path) -> None:
    config = SearchConfig(
        study=name,
        storage=str(tmp_path / "spaces.db"),
        trials=2,
        epochs=1,
        train_size=512,
        val_size=256,
        max_mflops=2.0,
        space=make_space(name),
    )

    assert workers.run_search(config, workers=1) == 2

    study = load(config)
    trained = [t for t in study.trials if REJECTED_KEY not in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trained)
    assert all(0.0 <= t.user_attrs["val_accuracy"] <= 1.0 for t in trained)
    assert study.user_attrs[SETTINGS_KEY]["space"]["name"] == name


def test_trial_seed_follows_study_seed_and_number() -> None:
    seeds = {
        (seed, number): SearchConfig(seed=seed).trial_seed(number)
        for seed in (0, 1)
        for number in (0, 1)
    }

    assert len(set(seeds.values())) == 4
    assert SearchConfig(seed=1).trial_seed(1) == seeds[(1, 1)]


def test_sampler_seed_differs_per_worker() -> None:
    config = dataclasses.replace(SearchConfig(), space=TINY_SPACE)

    def first_params(worker: int) -> list[dict[str, object]]:
        study = optuna.create_study(direction="maximize", sampler=make_sampler(config, worker))
        trials = [study.ask() for _ in range(3)]
        for trial in trials:
            config.space.suggest(trial)
        return [trial.params for trial in trials]

    assert first_params(0) == first_params(0)
    assert first_params(0) != first_params(1)
