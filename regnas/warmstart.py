"""Warm start: queue RegNet model-zoo configurations, scaled to the study's budget.

The zoo networks were designed for 224x224 ImageNet images, so at 28x28 with the search's stem
they are far above a few-MFLOPs budget. Each one is shrunk, keeping its shape: first its depth
is cut to the space's range, then its widths (``w0`` and ``wa`` together) are scaled down until
the network fits the budget and the space. Networks that scale to the same architecture are
queued once, and those already in the study are skipped, so rerunning a warm-started search
queues nothing new.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import math
from typing import Any

import optuna

from regnas.cli import count_text
from regnas.complexity import complexity
from regnas.regnet import WIDTH_QUANTUM, RegNetParams
from regnas.space import RegNetSpace
from regnas.study import (
    ARCHITECTURE_KEY,
    IMAGE_SIZE,
    SearchConfig,
    architecture_key,
    rejection_reasons,
)
from regnas.zoo import zoo_models


WARM_START_KEY = "warm_start"
# Depth factors tried in turn; for each, widths shrink in steps of 5 % down to 5 %.
_DEPTH_FACTORS = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2)
_WIDTH_SCALES = tuple(step / 20 for step in range(20, 0, -1))


@dataclasses.dataclass(frozen=True)
class WarmStartTrial:
    """One zoo network as the study will train it.

    Attributes:
        name: The zoo network, e.g. ``RegNetX-200MF``.
        params: Optuna parameters of the study's space that give the scaled network.
        key: Architecture digest of the scaled network.
        mflops: Its MFLOPs at 28x28.
        depth_factor: Factor applied to its depth.
        width_scale: Factor applied to ``w0`` and ``wa``.
    """

    name: str
    params: dict[str, Any]
    key: str
    mflops: float
    depth_factor: float
    width_scale: float


def zoo_trials(config: SearchConfig) -> tuple[list[WarmStartTrial], list[str]]:
    """Scale every zoo network of the space's family to the study's budget and space.

    RegNetY networks go to ``regnety`` studies, RegNetX networks to the others.

    Returns:
        The distinct scaled networks, smallest zoo network first, and the names of the zoo
        networks that no scaling fits.
    """
    family = "regnety" if config.space.name == "regnety" else "regnetx"
    chosen: list[WarmStartTrial] = []
    unfit = []
    for model in zoo_models(family):
        trial = _scale(model.name, model.regnet, config)
        if trial is None:
            unfit.append(model.name)
        elif all(trial.key != other.key for other in chosen):
            chosen.append(trial)
    return chosen, unfit


def _scale(name: str, regnet: RegNetParams, config: SearchConfig) -> WarmStartTrial | None:
    for depth_factor, width_scale, candidate in _candidates(regnet, config.space):
        params = config.space.params_for(candidate)
        if params is None:
            continue
        spec = candidate.to_anynet(stem_w=config.stem_w, stem_stride=config.stem_stride)
        cx = complexity(spec, IMAGE_SIZE)
        mflops = cx["flops"] / 1e6
        if not rejection_reasons(config, spec, mflops, cx["params"]):
            key = architecture_key(spec)
            return WarmStartTrial(name, params, key, mflops, depth_factor, width_scale)
    return None


def _candidates(regnet: RegNetParams, space: Any) -> Iterator[tuple[float, float, RegNetParams]]:
    is_regnet = isinstance(space, RegNetSpace)
    for depth_factor in _DEPTH_FACTORS:
        depth = max(1, round(regnet.depth * depth_factor))
        if is_regnet:
            depth = min(max(depth, space.depth[0]), space.depth[1])
        for width_scale in _WIDTH_SCALES:
            w0 = max(WIDTH_QUANTUM, round(regnet.w0 * width_scale / WIDTH_QUANTUM) * WIDTH_QUANTUM)
            wa, wm = round(regnet.wa * width_scale, 4), regnet.wm
            group_w, bot_mul = regnet.group_w, regnet.bot_mul
            if is_regnet:
                # Snap to the space, so that the queued values lie inside its distributions.
                w0 = min(max(w0, space.w0[0]), space.w0[1])
                wa = min(max(wa, space.wa[0]), space.wa[1])
                wm = min(max(wm, space.wm[0]), space.wm[1])
                group_w = min(space.group_w, key=lambda choice: abs(math.log(choice / group_w)))
                bot_mul = min(space.bot_mul, key=lambda choice: abs(choice - bot_mul))
            try:
                candidate = RegNetParams(
                    depth=depth,
                    w0=w0,
                    wa=wa,
                    wm=wm,
                    group_w=group_w,
                    bot_mul=bot_mul,
                    se_ratio=regnet.se_ratio,
                )
                candidate.stage_widths_depths()
            except ValueError:
                continue
            yield depth_factor, width_scale, candidate


def enqueue_zoo(study: optuna.Study, config: SearchConfig) -> list[WarmStartTrial]:
    """Queue the scaled zoo networks that the study has not trained or queued yet.

    Returns:
        The networks queued by this call.
    """
    trials, unfit = zoo_trials(config)
    known = {trial.user_attrs.get(ARCHITECTURE_KEY) for trial in study.get_trials(deepcopy=False)}
    queued = [trial for trial in trials if trial.key not in known]
    for trial in queued:
        study.enqueue_trial(
            trial.params,
            user_attrs={WARM_START_KEY: trial.name, ARCHITECTURE_KEY: trial.key},
        )
    names = ", ".join(
        f"{trial.name} ({trial.mflops:.2f} MFLOPs, depth x{trial.depth_factor:g}, "
        f"widths x{trial.width_scale:g})"
        for trial in queued
    )
    print(
        f"Warm start: queued {count_text(len(queued), 'model-zoo network')}"
        f"{': ' + names if names else ''}; "
        f"{len(trials) - len(queued)} already in the study"
        + (f"; no scaling of {', '.join(unfit)} fits the budget and space." if unfit else "."),
        flush=True,
    )
    return queued
