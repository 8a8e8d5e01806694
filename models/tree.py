"""Tree-structured linear regression with non-negative leaves (FastDeepIoT, Yao et al. 2018).

Each leaf predicts ``t = w . x + b`` with ``w >= 0`` and ``b >= 0`` over the *cost features*
(FLOPs, bytes, ...). Internal nodes split on *configuration variables* in two ways: an interval
(``v <= c``) or an integer multiple (``v mod m == 0``), which is how tile sizes of a runtime's
kernels show up. The tree is grown greedily on (relative) squared error with depth, leaf-size and
gain limits, then pruned by cost-complexity with the pruning strength chosen by cross-validation,
and optionally smoothed as M5 model trees are (each node's model blended with its ancestors').
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted, validate_data

# Pruning strengths tried by cross-validation, as fractions of the root's error.
_ALPHA_GRID = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
# Candidate splits re-scored with the exact NNLS leaves after ranking by least squares.
_RESCORE_TOP = 6
# Relative ridge that keeps the batched least-squares ranking solvable on tiny children.
_RIDGE = 1e-9

Node = dict[str, Any]


def _leaf_fit(Z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float, float]:
    """NNLS of y on [Z, 1] with row weights w; returns (coef, intercept, weighted SSE)."""
    n, p = Z.shape
    sw = np.sqrt(w)
    scale = np.max(np.abs(Z), axis=0) if n else np.ones(p)
    scale = np.where(scale > 0, scale, 1.0)
    A = np.empty((n, p + 1))
    A[:, :p] = Z / scale
    A[:, p] = 1.0
    A *= sw[:, None]
    target = y * sw
    if n == 0:
        return np.zeros(p), 0.0, 0.0
    beta, _ = nnls(A, target, maxiter=50 * (p + 1))
    resid = A @ beta - target
    return beta[:p] / scale, float(beta[p]), float(resid @ resid)


def _batched_sse(G: np.ndarray, b: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Least-squares SSE of many weighted systems given Gram G (k,p,p), X'y b (k,p), y'y (k,)."""
    p = G.shape[-1]
    trace = np.trace(G, axis1=1, axis2=2)
    ridge = (_RIDGE * np.maximum(trace, 1e-300) / p)[:, None, None] * np.eye(p)
    beta = np.linalg.solve(G + ridge, b[..., None])[..., 0]
    sse: np.ndarray = np.maximum(yy - np.einsum("kp,kp->k", beta, b), 0.0)
    return sse


class TreeLinearRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Regression tree whose leaves are non-negative linear models of cost features.

    Parameters
    ----------
    cost_features : sequence of int or str, default=None
        Columns used by the leaf models ``t = w . x + b`` (``w, b >= 0``). Names are resolved
        against ``feature_names`` (or the DataFrame's columns). None uses every column.
    split_features : sequence of int or str, default=None
        Columns that splits may test (configuration variables). None uses every column.
    feature_names : sequence of str, default=None
        Names of the columns of ``X`` when it is an array; used to resolve names and in rules.
    max_depth : int, default=6
        Maximum depth of the tree.
    min_samples_leaf : int, default=10
        Minimum number of samples in a leaf.
    min_gain : float, default=0.01
        Minimum relative error reduction, ``(E_node - E_children) / E_node``, for a split.
    multiple_candidates : sequence of int, default=(2, 4, 8, 16, 32)
        Moduli ``m`` tried for integer-multiple splits ``v mod m == 0``.
    max_thresholds : int, default=48
        Interval thresholds tried per feature and node (quantiles of the distinct values).
    cv : int, CV splitter or iterable of (train, test) index arrays, default=5
        Cross-validation that chooses the pruning strength; 0 or 1 disables pruning. Held-out
        rows are scored by weighted absolute error, ``sqrt(w) * |prediction - y|`` (with relative
        weights ``1 / y**2``: the absolute percentage error), not by the squared error the leaves
        minimise: one wild out-of-fold prediction of a small leaf would otherwise outweigh
        hundreds of good ones and prune a useful tree to its root.
    relative : bool, default=True
        Minimise squared *relative* error (row weights ``1 / y**2``) instead of absolute error.
    random_state : int, RandomState instance or None, default=None
        Seed of the cross-validation folds.
    forced_split : mapping, default=None
        A split made at the root before greedy growth, ``{"feature": name or index, "kind": "le"
        or "mod", "value": v}``, that pruning keeps: for a configuration variable known to switch
        the runtime to another kernel, whose few samples the greedy search would otherwise scatter
        over leaves fitted on the common kernel. Each side's top node then prices the rows its
        leaves may not extrapolate to (see Notes), not the root. Skipped (the root is grown
        greedily) when either side would hold fewer than ``2 * min_samples_leaf`` samples, the
        fewest a node needs to be split.
    smoothing : float, default=0.0
        M5 smoothing constant ``k`` (Quinlan 1992; Wang and Witten 1997): after pruning, each
        node's model is blended with its ancestors' up the path, ``p = (n * p_below + k * q) /
        (n + k)`` at each ancestor with model ``q``, ``n`` the training rows of the node below.
        Every model is linear in the same cost features, so the blend is folded into each node's
        coefficients and the leaves keep the form ``t = w . x + b`` with ``w, b >= 0``.
        The blend stops at a forced split (each side is a kernel of its own). 0 turns it off.
        A sequence is a grid: the constant is chosen with the pruning strength, by the same
        cross-validation (the grid's first value without one).

    Attributes
    ----------
    tree_ : dict
        The fitted tree as nested JSON-safe dicts.
    cost_indices_ : ndarray of int
        Column indices of the cost features.
    split_indices_ : ndarray of int
        Column indices of the split features.
    alpha_ : float
        The chosen pruning strength (fraction of the root error per extra leaf).
    smoothing_ : float
        The smoothing constant the tree was smoothed with (0: none).
    n_features_in_ : int
        Number of columns seen in ``fit``.
    forced_split_ : dict or None
        ``forced_split`` with its feature resolved to a column index.

    Notes
    -----
    Every node keeps the largest value of each cost feature among its samples (``x_max``). A
    row is priced by its leaf only where each feature the leaf weighs is at most
    :data:`EXTRAPOLATION_LIMIT` times that; otherwise by the nearest ancestor for which it is
    (the root prices the rest), so a leaf fitted on a narrow range never extrapolates far.
    It also keeps the largest share of its prediction each term took among its samples
    (``share_max``); a row where a term's share exceeds that by more than :data:`SHARE_SLACK`
    (a mix of features the node never saw) goes to the ancestor in the same way.
    """

    def __init__(
        self,
        cost_features: Sequence[int | str] | None = None,
        split_features: Sequence[int | str] | None = None,
        feature_names: Sequence[str] | None = None,
        max_depth: int = 6,
        min_samples_leaf: int = 10,
        min_gain: float = 0.01,
        multiple_candidates: Sequence[int] = (2, 4, 8, 16, 32),
        max_thresholds: int = 48,
        cv: Any = 5,
        relative: bool = True,
        random_state: int | np.random.RandomState | None = None,
        forced_split: Mapping[str, Any] | None = None,
        smoothing: float | Sequence[float] = 0.0,
    ) -> None:
        self.cost_features = cost_features
        self.split_features = split_features
        self.feature_names = feature_names
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.min_gain = min_gain
        self.multiple_candidates = multiple_candidates
        self.max_thresholds = max_thresholds
        self.cv = cv
        self.relative = relative
        self.random_state = random_state
        self.forced_split = forced_split
        self.smoothing = smoothing

    # ----------------------------------------------------------------------------- fitting
    def _names(self) -> list[str] | None:
        if self.feature_names is not None:
            return [str(n) for n in self.feature_names]
        names = getattr(self, "feature_names_in_", None)
        return [str(n) for n in names] if names is not None else None

    def _resolve(self, columns: Sequence[int | str] | None, n_features: int) -> np.ndarray:
        if columns is None:
            return np.arange(n_features)
        names = self._names()
        out = []
        for col in columns:
            if isinstance(col, str):
                if names is None or col not in names:
                    raise ValueError(f"unknown feature name {col!r}; pass feature_names")
                out.append(names.index(col))
            else:
                index = int(col)
                if not 0 <= index < n_features:
                    raise ValueError(f"feature index {index} out of range for {n_features} columns")
                out.append(index)
        return np.asarray(out, dtype=int)

    def _resolve_split(
        self, split: Mapping[str, Any] | None, n_features: int
    ) -> dict[str, Any] | None:
        if split is None:
            return None
        if split.get("kind") not in ("le", "mod"):
            raise ValueError(f"forced_split kind must be 'le' or 'mod', got {split.get('kind')!r}")
        (feature,) = self._resolve([split["feature"]], n_features)
        return {"feature": int(feature), "kind": split["kind"], "value": float(split["value"])}

    def _weights(self, y: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
        if not self.relative:
            return sample_weight.astype(float)
        # Relative error is undefined at y = 0: floor the denominator at 0.1% of the mean |y|.
        floor = max(1e-3 * float(np.mean(np.abs(y))) if y.size else 1.0, 1e-300)
        weights: np.ndarray = sample_weight / np.maximum(np.abs(y), floor) ** 2
        return weights

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> TreeLinearRegressor:
        """Grow the tree on ``X`` (n_samples, n_features) and targets ``y`` and prune it by CV.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature matrix: cost features and configuration variables.
        y : array-like of shape (n_samples,)
            Targets (e.g. latency in ms).
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights, multiplied with the relative-error weights.

        Returns
        -------
        self : TreeLinearRegressor
            The fitted estimator.
        """
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        sw = _sample_weight(sample_weight, X.shape[0])
        # Rows of zero weight (e.g. rejected by a robust refit) carry no information: drop them,
        # so they neither count towards min_samples_leaf nor leave a child with a zero Gram matrix.
        keep = sw > 0
        if not np.all(keep) and np.any(keep):
            X, y, sw = X[keep], y[keep], sw[keep]
        self.cost_indices_ = self._resolve(self.cost_features, X.shape[1])
        self.split_indices_ = self._resolve(self.split_features, X.shape[1])
        self.integer_columns_ = np.all(np.equal(np.mod(X, 1), 0), axis=0) & np.all(X >= 1, axis=0)
        self.forced_split_ = self._resolve_split(self.forced_split, X.shape[1])
        w = self._weights(y, sw)
        tree = self._grow(X, y, w)
        self.alpha_ = 0.0
        grid = self._smoothing_grid()
        self.smoothing_ = grid[0]
        splits = self._cv_splits(len(y))
        if splits and _n_nodes(tree) > 1:
            self.alpha_, self.smoothing_ = self._choose_alpha(X, y, w, splits, grid)
        self.tree_ = self._finish(_prune(tree, self.alpha_ * tree["error"]), X, self.smoothing_)
        return self

    def _smoothing_grid(self) -> list[float]:
        values = (
            [float(v) for v in self.smoothing]
            if isinstance(self.smoothing, Sequence)
            else [float(self.smoothing)]
        )
        if not values or min(values) < 0:
            raise ValueError(f"smoothing must be >= 0 or a non-empty grid, got {self.smoothing!r}")
        return values

    def _finish(self, pruned: Node, X: np.ndarray, smoothing: float) -> Node:
        """The pruned tree as it predicts: smoothed with constant ``smoothing`` over its
        training rows X."""
        if smoothing <= 0:
            return pruned
        return _smooth(pruned, X, self.cost_indices_, smoothing)

    def _grow(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> Node:
        return self._node(X, y, w, depth=0)

    def _node(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, depth: int) -> Node:
        Z = X[:, self.cost_indices_]
        coef, intercept, error = _leaf_fit(Z, y, w)
        node: Node = {
            "n": len(y),
            "coef": coef.tolist(),
            "intercept": intercept,
            "error": error,
            # Largest value of each cost feature among the node's samples: how far it is trusted.
            "x_max": Z.max(axis=0).tolist() if len(y) else [0.0] * Z.shape[1],
            # Largest share of the node's prediction each term took among those samples.
            "share_max": _term_shares(Z, coef, intercept).max(axis=0).tolist()
            if len(y)
            else [1.0] * Z.shape[1],
        }
        if depth >= self.max_depth or len(y) < 2 * self.min_samples_leaf or error <= 0:
            return node
        split = self._forced(X) if depth == 0 else None
        forced = split is not None
        if split is None:
            split = self._best_split(X, y, w, error)
        if split is None:
            return node
        feature, kind, value, mask = split
        node["split"] = {"feature": int(feature), "kind": kind, "value": float(value)}
        if forced:
            node["split"]["forced"] = True
        node["left"] = self._node(X[mask], y[mask], w[mask], depth + 1)
        node["right"] = self._node(X[~mask], y[~mask], w[~mask], depth + 1)
        return node

    def _forced(self, X: np.ndarray) -> tuple[int, str, float, np.ndarray] | None:
        """``forced_split_`` as a split of this node, if each side could be split again."""
        if self.forced_split_ is None:
            return None
        mask = _split_mask(self.forced_split_, X)
        # Each side must be a node the tree could split again, not a bare minimal leaf.
        if min(int(mask.sum()), int((~mask).sum())) < 2 * max(1, self.min_samples_leaf):
            return None
        f = self.forced_split_
        return int(f["feature"]), str(f["kind"]), float(f["value"]), mask

    def _candidates(self, X: np.ndarray) -> list[tuple[int, str, float, np.ndarray]]:
        """Every admissible split of this node: (feature, kind, value, mask of the 'true' side)."""
        out: list[tuple[int, str, float, np.ndarray]] = []
        min_leaf = max(1, self.min_samples_leaf)
        n = X.shape[0]
        for j in self.split_indices_:
            col = X[:, j]
            distinct = np.unique(col)
            if distinct.size < 2:
                continue
            cut_points = distinct[:-1]
            if cut_points.size > self.max_thresholds:
                picks = np.linspace(0, cut_points.size - 1, self.max_thresholds).round().astype(int)
                cut_points = cut_points[np.unique(picks)]
                if self.integer_columns_[j]:
                    cut_points = np.union1d(cut_points, self._tile_cuts(distinct))
            for c in cut_points:
                mask = col <= c
                left = int(mask.sum())
                if min_leaf <= left <= n - min_leaf:
                    out.append((int(j), "le", float(c), mask))
            if self.integer_columns_[j]:
                for m in self.multiple_candidates:
                    mask = np.mod(col, int(m)) == 0
                    left = int(mask.sum())
                    if min_leaf <= left <= n - min_leaf:
                        out.append((int(j), "mod", float(m), mask))
        return out

    def _tile_cuts(self, distinct: np.ndarray) -> np.ndarray:
        """Thresholds at multiples of the largest modulus that fits: where tile-sized steps are."""
        low, high = float(distinct[0]), float(distinct[-2])
        for m in sorted((int(m) for m in self.multiple_candidates), reverse=True):
            cuts = np.arange(np.ceil(low / m) * m, high + 1, m)
            if 0 < cuts.size <= self.max_thresholds:
                return cuts
        return np.zeros(0)

    def _best_split(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray, error: float
    ) -> tuple[int, str, float, np.ndarray] | None:
        candidates = self._candidates(X)
        if not candidates:
            return None
        # Rank all candidates by unconstrained weighted least squares (cheap, batched) ...
        Z = X[:, self.cost_indices_]
        scale = np.max(np.abs(Z), axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        A = np.hstack([Z / scale, np.ones((len(y), 1))])
        outer = np.einsum("ni,nj->nij", A * w[:, None], A)
        xy = A * (w * y)[:, None]
        yy = w * y * y
        masks = np.stack([c[3] for c in candidates]).astype(float)
        G_left = np.einsum("kn,nij->kij", masks, outer)
        b_left = masks @ xy
        yy_left = masks @ yy
        G_right = outer.sum(axis=0) - G_left
        b_right = xy.sum(axis=0) - b_left
        yy_right = yy.sum() - yy_left
        proxy = _batched_sse(G_left, b_left, yy_left) + _batched_sse(G_right, b_right, yy_right)
        # ... then re-score the best few with the real non-negative leaves.
        best: tuple[float, int] | None = None
        for k in np.argsort(proxy, kind="stable")[:_RESCORE_TOP]:
            mask = candidates[int(k)][3]
            e_left = _leaf_fit(Z[mask], y[mask], w[mask])[2]
            e_right = _leaf_fit(Z[~mask], y[~mask], w[~mask])[2]
            total = e_left + e_right
            if best is None or total < best[0]:
                best = (total, int(k))
        assert best is not None
        if (error - best[0]) / error < self.min_gain:
            return None
        return candidates[best[1]]

    def _cv_splits(self, n_samples: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train, test) index pairs from ``cv``: a fold count, a splitter or explicit splits."""
        cv = self.cv
        if cv is None or isinstance(cv, int | np.integer):
            folds = int(cv or 0)
            if folds < 2 or n_samples < 2 * folds:
                return []
            kfold = KFold(n_splits=folds, shuffle=True, random_state=self.random_state)
            return list(kfold.split(np.zeros((n_samples, 1))))
        if hasattr(cv, "split"):
            return list(cv.split(np.zeros((n_samples, 1))))
        return [(np.asarray(tr), np.asarray(te)) for tr, te in cv]

    def _choose_alpha(
        self,
        X: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        splits: list[tuple[np.ndarray, np.ndarray]],
        smoothing_grid: Sequence[float] = (0.0,),
    ) -> tuple[float, float]:
        """The pruning strength and smoothing constant with the least held-out error."""
        errors = np.zeros((len(_ALPHA_GRID), len(smoothing_grid)))
        for train, test in splits:
            X_train, X_test = X[train], X[test]
            tree = self._grow(X_train, y[train], w[train])
            for i, alpha in enumerate(_ALPHA_GRID):
                pruned = _prune(tree, alpha * tree["error"])
                for j, k in enumerate(smoothing_grid):
                    pred = _predict(self._finish(pruned, X_train, k), X_test, self.cost_indices_)
                    errors[i, j] += float(np.sum(np.sqrt(w[test]) * np.abs(pred - y[test])))
        # Among equally good choices prefer the strongest pruning (the smaller tree; the grid is
        # ascending), then the grid's first smoothing constant.
        best = float(np.min(errors))
        tolerance = 1e-9 * max(best, 1e-300)
        good = np.argwhere(errors <= best + tolerance)  # (alpha index, smoothing index) rows
        i = int(good[:, 0].max())
        j = int(good[good[:, 0] == i, 1].min())
        return float(_ALPHA_GRID[i]), float(smoothing_grid[j])

    # ----------------------------------------------------------------------------- predicting
    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets (same units as ``y`` in ``fit``) for ``X`` (n_samples, n_features)."""
        check_is_fitted(self, "tree_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return _predict(self.tree_, X, self.cost_indices_)

    def apply(self, X: Any) -> np.ndarray:
        """Index of the leaf (in :meth:`leaves` order) that each row of ``X`` falls in."""
        check_is_fitted(self, "tree_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = np.zeros(X.shape[0], dtype=int)
        counter = [0]

        def walk(node: Node, rows: np.ndarray) -> None:
            if "split" not in node:
                out[rows] = counter[0]
                counter[0] += 1
                return
            mask = _split_mask(node["split"], X[rows])
            walk(node["left"], rows[mask])
            walk(node["right"], rows[~mask])

        walk(self.tree_, np.arange(X.shape[0]))
        return out

    @property
    def n_leaves_(self) -> int:
        check_is_fitted(self, "tree_")
        return _n_leaves(self.tree_)

    def leaves(self) -> list[tuple[list[str], Node]]:
        """Leaves in order, each with its list of path conditions (as text) and its node."""
        check_is_fitted(self, "tree_")
        return self._leaves_with(self._column_names())

    def _column_names(self, feature_names: Sequence[str] | None = None) -> list[str]:
        names = list(feature_names) if feature_names is not None else self._names()
        return names if names is not None else [f"x{i}" for i in range(self.n_features_in_)]

    def rules(self, feature_names: Sequence[str] | None = None, unit: str = "") -> str:
        """Human-readable rules, one line per leaf, and a last line saying the smoothing constant
        when the tree is smoothed.

        Example: ``if cout mod 16 == 0 and h <= 28: t = 1.2e-09*flops + 3.1e-07*output_bytes +
        0.012`` (``unit`` is appended to the intercept).
        """
        check_is_fitted(self, "tree_")
        names = self._column_names(feature_names)
        lines = []
        for path, leaf in self._leaves_with(names):
            terms = [
                f"{c:.3g}*{names[int(j)]}"
                for c, j in zip(leaf["coef"], self.cost_indices_, strict=True)
                if c > 0
            ]
            terms.append(f"{leaf['intercept']:.3g}{(' ' + unit) if unit else ''}")
            condition = " and ".join(path) if path else "always"
            lines.append(f"if {condition}: t = {' + '.join(terms)}   [n={leaf['n']}]")
        k = self.smoothing_
        if k > 0:
            lines.append(
                f"(each leaf's t is its own fit blended with its ancestors', M5 smoothing k={k:g}:"
                " (n * below + k * ancestor) / (n + k) at each level up)"
            )
        return "\n".join(lines)

    def _leaves_with(self, names: list[str]) -> list[tuple[list[str], Node]]:
        """Leaves in order, each with its path conditions written with ``names``."""
        out: list[tuple[list[str], Node]] = []

        def walk(node: Node, path: list[str]) -> None:
            if "split" not in node:
                out.append((path, node))
                return
            yes, no = _condition_text(node["split"], names)
            walk(node["left"], [*path, yes])
            walk(node["right"], [*path, no])

        walk(self.tree_, [])
        return out

    # ----------------------------------------------------------------------------- export
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the parameters and the fitted tree (see :meth:`from_dict`)."""
        check_is_fitted(self, "tree_")
        params = self.get_params()
        for key in ("cost_features", "split_features", "feature_names", "multiple_candidates"):
            if params[key] is not None:
                params[key] = list(params[key])
        if params["forced_split"] is not None:
            params["forced_split"] = dict(params["forced_split"])
        if isinstance(params["smoothing"], Sequence):
            params["smoothing"] = [float(v) for v in params["smoothing"]]
        if not isinstance(params["random_state"], int | type(None)):
            params["random_state"] = None
        return {
            "params": params,
            "n_features_in": int(self.n_features_in_),
            "cost_indices": [int(i) for i in self.cost_indices_],
            "split_indices": [int(i) for i in self.split_indices_],
            "alpha": float(self.alpha_),
            "smoothing": float(self.smoothing_),
            "tree": self.tree_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TreeLinearRegressor:
        """A fitted estimator rebuilt from :meth:`to_dict` output."""
        est = cls(**data["params"])
        est.n_features_in_ = int(data["n_features_in"])
        est.cost_indices_ = np.asarray(data["cost_indices"], dtype=int)
        est.split_indices_ = np.asarray(data["split_indices"], dtype=int)
        est.alpha_ = float(data["alpha"])
        # Stored before smoothing existed: the tree was not smoothed. A stored tree is already
        # smoothed (the blend is folded into its coefficients); the constant is for the record.
        est.smoothing_ = float(data.get("smoothing", 0.0))
        est.tree_ = data["tree"]
        return est


def _sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n_samples)
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.ndim == 0:
        return np.full(n_samples, float(sw))
    if sw.shape != (n_samples,):
        raise ValueError(f"sample_weight has shape {sw.shape}, expected ({n_samples},)")
    if np.any(sw < 0) or not np.all(np.isfinite(sw)):
        raise ValueError("sample_weight must be finite and non-negative")
    if n_samples and not np.any(sw > 0):
        raise ValueError("sample_weight is zero for every sample: nothing to fit")
    return sw


def _split_mask(split: dict[str, Any], X: np.ndarray) -> np.ndarray:
    col = X[:, int(split["feature"])]
    if split["kind"] == "le":
        mask: np.ndarray = col <= split["value"]
        return mask
    return np.asarray(np.mod(col, int(split["value"])) == 0)


def _condition_text(split: dict[str, Any], names: Sequence[str]) -> tuple[str, str]:
    name = names[int(split["feature"])]
    value = float(split["value"])
    shown = f"{value:g}"
    if split["kind"] == "le":
        return f"{name} <= {shown}", f"{name} > {shown}"
    return f"{name} mod {int(value)} == 0", f"{name} mod {int(value)} != 0"


# A node's linear model prices a row only where each cost feature it weighs (coefficient > 0) is
# at most this many times the largest value among the node's own samples; beyond, the row is
# priced by the nearest ancestor that saw such values (the root prices whatever is left). A leaf
# of 11 large-activation 1x1 convs weighed param_bytes at 22 us per byte, harmless on its own
# samples (tiny weights) and 100x too slow for a 5 MB 1x1 conv on one pixel (model version 3 of
# the 2026-11-29 10:06 campaign; its x_max was 29 KB). A GEMM's time is linear in its size, so
# moderate extrapolation is the point of linear leaves. 8x by 2-split CV on the two latest
# 2500-sample campaigns: conv2d 5.03 -> 4.86% and 5.73 -> 5.72% against no limit (2x: 5.36%,
# 4x: 4.95% on the first), depthwise and dense within 0.1 point.
EXTRAPOLATION_LIMIT = 8.0


# ... and only where no term it weighs takes a share of the row's prediction more than this above
# the largest share that term took among the node's samples. The per-feature limit above cannot
# see a row whose features are each in range but whose mix is not: a conv2d leaf whose samples'
# time param_bytes explained at most part of (large convs, where weights and FLOPs grow
# together) weighed it at 0.85 ns per byte, and priced 7x7 valid convs on a 7x7 input (one
# output pixel, 8.3-9.5 MB of weights, 0.63-0.93 ms measured) at 7.5-8.5 ms, 94% of it weights.
# On that held-out third of the 2026-11-29 10:06 campaign, conv2d MAPE 18.7% (max 1096%) ->
# 5.5% (max 58%); 3-split CV (2 seeds) of conv2d / depthwise / dense: 5.49 / 8.00 / 6.64% ->
# 5.52 / 8.00 / 6.54% on that campaign, 6.48 / 11.83 / 7.81% -> 6.68 / 11.83 / 7.81% on the one
# of 07:31, 7.81 / 11.41 / 9.25% -> 7.81 / 11.17 / 9.25% on the noisy one of 11:58. 0.2 was the
# first value tried; no other was.
SHARE_SLACK = 0.2


def _term_shares(Z: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """Share of each row's prediction ``Z @ coef + intercept`` taken by each term (0 if none)."""
    terms = Z * np.asarray(coef)
    total = terms.sum(axis=1) + intercept
    shares: np.ndarray = terms / np.where(total > 0, total, np.inf)[:, None]
    return shares


def _in_range(node: Node, Z: np.ndarray) -> np.ndarray:
    """Rows of cost features ``Z`` within the range node's model is trusted on."""
    if "x_max" not in node:  # trees stored before ranges were kept: trusted everywhere
        return np.ones(Z.shape[0], dtype=bool)
    coef = np.asarray(node["coef"])
    weighed = coef > 0
    limit = EXTRAPOLATION_LIMIT * np.asarray(node["x_max"])[weighed]
    ok = np.all(Z[:, weighed] <= limit, axis=1)
    if "share_max" in node:  # stored before shares were kept: the value limit only
        shares = _term_shares(Z, coef, float(node["intercept"]))[:, weighed]
        ok &= np.all(shares <= np.asarray(node["share_max"])[weighed] + SHARE_SLACK, axis=1)
    return np.asarray(ok)


def _predict(tree: Node, X: np.ndarray, cost_indices: np.ndarray) -> np.ndarray:
    out = np.zeros(X.shape[0])
    Z = X[:, cost_indices]

    def price(node: Node, rows: np.ndarray, everything: bool = False) -> np.ndarray:
        """Price the rows within ``node``'s range; return the others."""
        ok = np.ones(rows.size, dtype=bool) if everything else _in_range(node, Z[rows])
        out[rows[ok]] = Z[rows[ok]] @ np.asarray(node["coef"]) + node["intercept"]
        rest: np.ndarray = rows[~ok]
        return rest

    def walk(node: Node, rows: np.ndarray, root: bool = False) -> np.ndarray:
        if rows.size == 0:
            return rows
        if "split" not in node:
            return price(node, rows, root)
        mask = _split_mask(node["split"], X[rows])
        # Below a forced split each side is a model of its own kernel: its top node prices all
        # its rows, and none falls back to the node above, fitted on both kernels.
        forced = bool(node["split"].get("forced"))
        rest = np.concatenate(
            [walk(node["left"], rows[mask], forced), walk(node["right"], rows[~mask], forced)]
        )
        return price(node, rest, root) if rest.size else rest

    walk(tree, np.arange(X.shape[0]), root=True)
    return out


def _smooth(tree: Node, X: np.ndarray, cost_indices: np.ndarray, k: float) -> Node:
    """``tree`` with each node's model blended with its ancestors' (M5 smoothing, constant
    ``k``), ``share_max`` recomputed on its training rows ``X``."""
    Z = X[:, cost_indices]

    def walk(node: Node, rows: np.ndarray, above: list[tuple[np.ndarray, float, int]]) -> Node:
        own = np.asarray(node["coef"], dtype=float)
        coef, intercept = own, float(node["intercept"])
        # Up the path: at each ancestor the value from below (n rows) meets the ancestor's model.
        for a_coef, a_intercept, n_below in reversed(above):
            coef = (n_below * coef + k * a_coef) / (n_below + k)
            intercept = (n_below * intercept + k * a_intercept) / (n_below + k)
        out: Node = {**node, "coef": coef.tolist(), "intercept": float(intercept)}
        if rows.size:
            out["share_max"] = _term_shares(Z[rows], coef, intercept).max(axis=0).tolist()
        if "split" not in node:
            return out
        mask = _split_mask(node["split"], X[rows])
        forced = bool(node["split"].get("forced"))
        for side, side_rows in (("left", rows[mask]), ("right", rows[~mask])):
            child = node[side]
            # Below a forced split each side starts afresh: this node was fitted on both kernels.
            path = [] if forced else [*above, (own, float(node["intercept"]), int(child["n"]))]
            out[side] = walk(child, side_rows, path)
        return out

    return walk(tree, np.arange(X.shape[0]), [])


def _n_leaves(node: Node) -> int:
    return 1 if "split" not in node else _n_leaves(node["left"]) + _n_leaves(node["right"])


def _n_nodes(node: Node) -> int:
    return 1 if "split" not in node else 1 + _n_nodes(node["left"]) + _n_nodes(node["right"])


def _prune(node: Node, alpha: float) -> Node:
    """The subtree minimising error + alpha * leaves (bottom-up cost-complexity pruning)."""
    pruned, _ = _prune_cost(node, alpha)
    return pruned


def _prune_cost(node: Node, alpha: float) -> tuple[Node, float]:
    as_leaf = {k: v for k, v in node.items() if k not in ("split", "left", "right")}
    leaf_cost = node["error"] + alpha
    if "split" not in node:
        return as_leaf, leaf_cost
    left, left_cost = _prune_cost(node["left"], alpha)
    right, right_cost = _prune_cost(node["right"], alpha)
    if left_cost + right_cost < leaf_cost or node["split"].get("forced"):
        return {
            **as_leaf,
            "split": node["split"],
            "left": left,
            "right": right,
        }, left_cost + right_cost
    return as_leaf, leaf_cost
