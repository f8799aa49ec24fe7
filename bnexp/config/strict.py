"""The base of every config section: unknown keys forbidden, no inf or nan."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # inf and nan are never a meaningful setting (lr: .inf trains nothing and reports numbers)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
