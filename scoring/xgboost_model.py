"""An XGBoost booster as the worker scores with it (optional: `pip install '.[xgboost]'`).

Stored as XGBoost's own JSON model (xgboost.json), never pickle; the reasons are its
exact TreeSHAP contributions (`pred_contribs`). Only imported for an XGBoost artifact,
so the worker needs xgboost only to serve one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from scoring.families import XGBOOST


@dataclass(frozen=True)
class XGBoostModel:
    booster: xgb.Booster
    family = XGBOOST

    @classmethod
    def from_bytes(cls, data: bytes) -> XGBoostModel:
        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        booster.set_param({"nthread": 1})  # one thread: a second one spins (DESIGN.md)
        return cls(booster)

    def probability(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        return np.asarray(self.booster.inplace_predict(x, missing=np.nan), dtype=np.float64)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        matrix = xgb.DMatrix(np.asarray(features, dtype=np.float64), missing=np.nan, nthread=1)
        contrib = self.booster.predict(matrix, pred_contribs=True)
        return np.asarray(contrib, dtype=np.float64)[:, :-1]  # the last column is the base

    def serialise(self) -> bytes:
        return bytes(self.booster.save_raw("json"))
