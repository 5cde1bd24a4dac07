"""Parse a model in a throw-away process, before the worker does:

    python -I model_probe.py lightgbm LIB N     a LightGBM text model (LIB: its library)
    python -I model_probe.py xgboost N          an XGBoost JSON model

LightGBM's parser aborts the whole process (std::terminate) on some malformed model
text, which no `except` can catch, and XGBoost's trusts a model's tree arrays; a
worker must not die of a bad artifact, so the model is parsed here first. For
LightGBM, standard library only (its C API through ctypes): importing the `lightgbm`
package would cost seconds. Reads the model on stdin; exits 0 when it parses and
predicts rows of N features, 1 with the reason on stderr when the library reports an
error; a crash shows as a signal.
"""

from __future__ import annotations

import ctypes
import json
import sys

DTYPE_FLOAT64 = 1
PREDICT_NORMAL, PREDICT_CONTRIB = 0, 3


def probe(library: str, expected_features: int, model_text: bytes) -> str | None:
    """None when the model is usable, else what is wrong with it. Makes the calls the
    `lightgbm` wrapper and the scorer make (load, loaded parameters, predictions), and
    checks every split of every tree names one of the expected features."""
    # Read first from the text: LightGBM itself indexes its feature names by a split's
    # feature when it dumps the model, and reads past their end on a bad one (SIGSEGV).
    problem = _check_split_lines(model_text, expected_features)
    if problem is not None:
        return problem
    lib = ctypes.cdll.LoadLibrary(library)
    lib.LGBM_GetLastError.restype = ctypes.c_char_p

    def last_error() -> str:
        return bytes(lib.LGBM_GetLastError()).decode(errors="replace")

    handle, number = ctypes.c_void_p(), ctypes.c_int()
    text = ctypes.c_char_p(model_text)
    if lib.LGBM_BoosterLoadModelFromString(text, ctypes.byref(number), ctypes.byref(handle)):
        return last_error()
    counts = {}
    for name in ("GetNumFeature", "NumModelPerIteration", "GetNumClasses", "GetCurrentIteration"):
        if getattr(lib, f"LGBM_Booster{name}")(handle, ctypes.byref(number)):
            return last_error()
        counts[name] = number.value
    features, outputs = counts["GetNumFeature"], counts["NumModelPerIteration"]
    if features != expected_features or outputs != 1 or counts["GetNumClasses"] != 1:
        return (
            f"expects {features} features and gives {outputs} outputs, "
            f"not {expected_features} features and one probability"
        )
    params, error = _string(lib, "LGBM_BoosterGetLoadedParam", handle)
    dump, error = (None, error) if params is None else _string(lib, "LGBM_BoosterDumpModel", handle)
    problem = error if dump is None else _check_splits(dump, expected_features)
    if problem is not None:
        return problem
    # Rows that send predictions down different branches: zeros, missing, both extremes.
    for value in (0.0, float("nan"), 1e30, -1e30):
        row = (ctypes.c_double * expected_features)(*[value] * expected_features)
        for kind, size in ((PREDICT_NORMAL, 1), (PREDICT_CONTRIB, expected_features + 1)):
            result, length = (ctypes.c_double * size)(), ctypes.c_int64()
            code = lib.LGBM_BoosterPredictForMat(
                handle,
                row,
                DTYPE_FLOAT64,
                ctypes.c_int32(1),
                ctypes.c_int32(expected_features),
                1,  # row-major
                kind,
                0,  # from the first iteration
                -1,  # to the last
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(length),
                result,
            )
            if code:
                return last_error()
            if length.value != size:
                return f"predicts {length.value} values where {size} were expected"
    return None


def _string(lib: ctypes.CDLL, call: str, handle: ctypes.c_void_p) -> tuple[str | None, str]:
    """A string-returning C API call, as the wrapper makes it: (text, "") or (None, error)."""
    size = 1 << 20
    while True:
        buffer, length = ctypes.create_string_buffer(size), ctypes.c_int64()
        extra = (0, -1, 0) if call == "LGBM_BoosterDumpModel" else ()
        code = getattr(lib, call)(
            handle, *extra, ctypes.c_int64(size), ctypes.byref(length), buffer
        )
        if code:
            return None, bytes(lib.LGBM_GetLastError()).decode(errors="replace")
        if length.value <= size:
            return buffer.value.decode("utf-8", errors="replace"), ""
        size = length.value


def _check_split_lines(model_text: bytes, features: int) -> str | None:
    """Every `split_feature=` line of the model text names expected features only."""
    for line in model_text.splitlines():
        if not line.startswith(b"split_feature="):
            continue
        for field in line.removeprefix(b"split_feature=").split():
            if not field.isdigit() or int(field) >= features:
                feature = int(field) if field.isdigit() else field.decode(errors="replace")
                return f"a tree splits on feature {feature!r}, not one of 0..{features - 1}"
    return None


def _check_splits(dump: str, features: int) -> str | None:
    try:
        trees = json.loads(dump)["tree_info"]
        nodes = [tree["tree_structure"] for tree in trees]
        while nodes:  # iterative: a deep tree must not hit the recursion limit
            node = nodes.pop()
            if "split_feature" in node:
                feature = node["split_feature"]
                if not isinstance(feature, int) or not 0 <= feature < features:
                    return f"a tree splits on feature {feature!r}, not one of 0..{features - 1}"
                nodes += [node["left_child"], node["right_child"]]
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        return f"its trees cannot be read back ({type(err).__name__}: {err})"
    return None


def probe_xgboost(expected_features: int, model: bytes) -> str | None:
    """None when the model loads as a binary classifier of the expected features whose
    probabilities and contributions are finite on rows that take every branch."""
    import numpy as np
    import xgboost as xgb

    try:
        problem = _check_trees(json.loads(model), expected_features)
        if problem is not None:  # XGBoost would read out of bounds with such a tree
            return problem
        booster = xgb.Booster()
        booster.load_model(bytearray(model))
        booster.set_param({"nthread": 1})
        learner = json.loads(booster.save_config())["learner"]
        objective = learner["objective"]["name"]
        outputs = int(learner["learner_model_param"].get("num_target", "1"))
        classes = int(learner["learner_model_param"].get("num_class", "0"))
        features = booster.num_features()
        if objective != "binary:logistic" or outputs != 1 or classes > 1:
            return f"its objective is {objective!r} with {outputs} outputs, not binary:logistic"
        if features != expected_features:
            return f"expects {features} features, not {expected_features}"
        for value in (0.0, np.nan, 1e30, -1e30):
            row = np.full((1, expected_features), value)
            probability = booster.inplace_predict(row, missing=np.nan)
            matrix = xgb.DMatrix(row, missing=np.nan, nthread=1)
            contributions = booster.predict(matrix, pred_contribs=True)
            if np.shape(probability) != (1,) or np.shape(contributions) != (1, features + 1):
                return "its predictions do not have one value per row and feature"
            if not (np.all(np.isfinite(probability)) and np.all(np.isfinite(contributions))):
                return f"it gives no finite score for a row of {value}"
    except (xgb.core.XGBoostError, ValueError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or ["no message"])[0]  # then a stack trace
        return f"{type(err).__name__}: {first[:300]}"
    return None


def _check_trees(model: dict, features: int) -> str | None:
    """Every tree's nodes have children inside the tree and split on a known feature."""
    booster = model["learner"]["gradient_booster"]
    if booster.get("name") != "gbtree":
        return f"its booster is {booster.get('name')!r}, not gbtree"
    for tree in booster["model"]["trees"]:
        left, right = tree["left_children"], tree["right_children"]
        splits, nodes = tree["split_indices"], len(tree["left_children"])
        if len(right) != nodes or len(splits) != nodes or len(tree["split_conditions"]) != nodes:
            return "a tree's node arrays differ in length"
        for node in range(nodes):
            if left[node] == -1:
                continue  # a leaf
            if not (0 < left[node] < nodes and 0 < right[node] < nodes):
                return f"a tree's node {node} has a child outside the tree"
            if not (isinstance(splits[node], int) and 0 <= splits[node] < features):
                return f"a tree splits on feature {splits[node]!r}, not one of 0..{features - 1}"
    return None


def main() -> int:
    model = sys.stdin.buffer.read()
    if sys.argv[1] == "xgboost":
        problem = probe_xgboost(int(sys.argv[2]), model)
    else:
        problem = probe(sys.argv[2], int(sys.argv[3]), model)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
