"""The monitoring view: label statistics of one model."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from controller.api.runtime import context


def stats(model: str, request: Request) -> Any:
    """Predictions (served / logged / batch, apart from bootstrap reference rows), labeled, coverage, pending,
    unmatched labels and label-delay percentiles (seconds), as of now."""
    api = context(request)
    rt = api.runtime(model)
    return rt.store.label_stats(model, api.clock.now()).to_dict()
