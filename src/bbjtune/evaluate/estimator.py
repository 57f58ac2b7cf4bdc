"""The unbiased pass@k estimator (Chen et al., 2021), used for compile@k and HumanEval pass@k.

With n samples of which c pass, the chance that at least one of k samples drawn without
replacement passes is 1 - C(n-c, k) / C(n, k). Averaging that over prompts is unbiased, unlike
"did any of the first k pass". The product form below avoids huge binomials.
"""

from __future__ import annotations

from collections.abc import Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples (out of n, c of them correct) is correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean pass@k over prompts given (n, c) per prompt; prompts with fewer than k samples are skipped."""
    values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
    return sum(values) / len(values) if values else None
