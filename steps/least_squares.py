"""Least squares of dewp on temp from streamed co-moments: exact, in memory that does not grow.

A straight line fitted by least squares (and ElasticNet with one feature) depends on the rows only
through six numbers: the count, the two means, the two sums of squared deviations and the sum of
cross deviations. Those are computed per piece of data and merged exactly, so a fit over many
files never holds more than one piece.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from steps.model import LinearCoefficients


@dataclass(frozen=True)
class CoMoments:
    """The sufficient statistics of a least-squares line through (x, y) pairs.

    `m2_x` is the sum of (x - mean_x)**2, `m2_y` the same for y, `c_xy` the sum of
    (x - mean_x) * (y - mean_y); `min_x`/`max_x` span the x values seen (NaN when empty). Units
    are those of the data: deg F for temp and dewp, deg F squared for the sums.
    """

    count: int = 0
    mean_x: float = 0.0
    mean_y: float = 0.0
    m2_x: float = 0.0
    m2_y: float = 0.0
    c_xy: float = 0.0
    min_x: float = math.nan
    max_x: float = math.nan

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> CoMoments:
        """The co-moments of one piece: float64 arrays of the same length, every value finite."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"x and y must be 1-d arrays of one length, got {x.shape}, {y.shape}")
        if x.size == 0:
            return cls()
        mean_x, mean_y = float(x.mean()), float(y.mean())
        dx, dy = x - mean_x, y - mean_y
        # Element-wise products and numpy's pairwise sum, not `dx @ dx`: BLAS's dot spawns
        # threads that cost ten times the arithmetic on a busy machine, and sums less carefully.
        return cls(
            count=int(x.size),
            mean_x=mean_x,
            mean_y=mean_y,
            m2_x=float(np.sum(dx * dx)),
            m2_y=float(np.sum(dy * dy)),
            c_xy=float(np.sum(dx * dy)),
            min_x=float(x.min()),
            max_x=float(x.max()),
        )

    def merge(self, other: CoMoments) -> CoMoments:
        """The co-moments of both pieces together.

        The pairwise update of Chan, Golub and LeVeque ("Updating formulae and a pairwise
        algorithm for computing sample variances", 1979), extended to the cross term: no sum of
        raw squares is ever formed, so merging many pieces loses no precision to cancellation.
        """
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta_x = other.mean_x - self.mean_x
        delta_y = other.mean_y - self.mean_y
        weight = self.count * other.count / count
        return CoMoments(
            count=count,
            mean_x=self.mean_x + delta_x * other.count / count,
            mean_y=self.mean_y + delta_y * other.count / count,
            m2_x=self.m2_x + other.m2_x + delta_x * delta_x * weight,
            m2_y=self.m2_y + other.m2_y + delta_y * delta_y * weight,
            c_xy=self.c_xy + other.c_xy + delta_x * delta_y * weight,
            min_x=min(self.min_x, other.min_x),
            max_x=max(self.max_x, other.max_x),
        )


def linear_fit(moments: CoMoments) -> LinearCoefficients:
    """Ordinary least squares y = coef * x + intercept, as scikit-learn's LinearRegression fits it.

    With no spread in x the slope is 0 and the intercept the mean of y (the minimum-norm solution
    LinearRegression's lstsq returns). Raises ValueError without rows.
    """
    _need_rows(moments)
    coef = moments.c_xy / moments.m2_x if moments.m2_x > 0 else 0.0
    return LinearCoefficients(coef, moments.mean_y - coef * moments.mean_x)


def elasticnet_fit(moments: CoMoments, alpha: float, l1_ratio: float) -> LinearCoefficients:
    """ElasticNet(alpha, l1_ratio) with an intercept, for one feature, in closed form.

    scikit-learn's ElasticNet minimises 1/(2n) * ||y - Xw - b||^2 + alpha * l1_ratio * |w|
    + alpha * (1 - l1_ratio) / 2 * w^2 (sklearn/linear_model/_coordinate_descent.py, class
    ElasticNet), after centring x and y for the intercept. With one feature the minimiser is the
    soft-thresholded slope: w = S(c_xy / n, alpha * l1_ratio) / (m2_x / n + alpha * (1 - l1_ratio)),
    S(z, t) = sign(z) * max(|z| - t, 0), and b = mean_y - w * mean_x; coordinate descent reaches
    exactly this point in its first step. So ElasticNet is fitted from the same co-moments as
    least squares, exactly and over every row, not on a sample.
    """
    _need_rows(moments)
    n = moments.count
    z = moments.c_xy / n
    threshold = alpha * l1_ratio
    shrunk = math.copysign(max(abs(z) - threshold, 0.0), z)
    denominator = moments.m2_x / n + alpha * (1.0 - l1_ratio)
    coef = shrunk / denominator if denominator > 0 else 0.0
    return LinearCoefficients(coef, moments.mean_y - coef * moments.mean_x)


@dataclass(frozen=True)
class LineErrors:
    """How a line does on the rows of some co-moments: RMSE in deg F, R2 unitless."""

    rmse: float
    r2: float


def line_errors(moments: CoMoments, line: LinearCoefficients) -> LineErrors:
    """RMSE and R2 of `line` over every row the co-moments describe, exactly.

    The sum of squared errors of y - (a + b x) is m2_y - 2 b c_xy + b^2 m2_x
    + n (mean_y - a - b mean_x)^2: deviations only, no raw sums. R2 is 1 - SSE / m2_y as
    scikit-learn's r2_score defines it (1.0 for a perfect fit of constant y, 0.0 otherwise when y
    has no spread). Raises ValueError without rows.
    """
    _need_rows(moments)
    b, a = line.coef, line.intercept
    bias = moments.mean_y - a - b * moments.mean_x
    sse = moments.m2_y - 2.0 * b * moments.c_xy + b * b * moments.m2_x
    sse = max(sse, 0.0) + moments.count * bias * bias
    no_spread = 1.0 if sse == 0 else 0.0
    r2 = 1.0 - sse / moments.m2_y if moments.m2_y > 0 else no_spread
    return LineErrors(math.sqrt(sse / moments.count), r2)


def _need_rows(moments: CoMoments) -> None:
    if moments.count == 0:
        raise ValueError("no rows to fit")
