"""Feature families: how a small dictionary's latents reappear in a larger one.

Train SAEs of two widths on the same activations and many of the small one's latents come
back in the large one, either as one latent pointing the same way (a one-to-one match) or
as several latents near it, each taking part of its job (the latent *splits*: "beach"
into "sand", "waves", "shells"; Bricken et al. 2023, "Towards Monosemanticity", feature
splitting). We compare latents by their decoder rows, the directions they write:

    cos(i, j) = W_dec_small[i] . W_dec_large[j] / (|W_dec_small[i]| |W_dec_large[j]|)

For each small latent, its `n` nearest large latents by that cosine; its *family* is
those at or above `threshold`. With 0 family members it is unmatched, with 1 one-to-one,
with 2 or more a split. The large latents in no family are new directions the wider
dictionary found. Decoder cosine is one view: two latents can point alike and fire on
different tokens, so a notebook checks a split's members against their top contexts.

`nearest_latents` does the search in chunks of rows, so two 16,384-latent dictionaries
need chunk x n_b floats at a time (64 MiB at the default chunk), not 16,384^2 (1 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..sae.model import SparseAutoencoder

CHUNK = 1024  # rows of W_a per matmul: chunk x n_b float32 cosines live at once
THRESHOLD = 0.7  # decoder cosine a family member needs; random unit vectors in d dims sit
# near 0 (std 1/sqrt(d)), so 0.7 is far above chance for d in the tens and up


@torch.no_grad()
def nearest_latents(W_a: Tensor, W_b: Tensor, n: int, *, exclude_self: bool = False,
                    chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """For each row of W_a (n_a, d), the `n` rows of W_b (n_b, d) with the highest cosine:
    ids (n_a, n) int64 and cos (n_a, n) float32, highest first, on W_a's device.

    exclude_self: W_a and W_b are the same dictionary and row i is not its own
    neighbour (the within-dictionary nearest latents). A zero row has cosine 0 with all.
    """
    if W_a.dim() != 2 or W_b.dim() != 2 or W_a.shape[1] != W_b.shape[1]:
        raise ValueError(f"W_a and W_b must be (n, d) matrices of the same d, got "
                         f"{tuple(W_a.shape)} and {tuple(W_b.shape)}: pass decoder rows (W_dec)")
    if exclude_self and W_a.shape != W_b.shape:
        raise ValueError(f"exclude_self compares a dictionary with itself, but W_a is "
                         f"{tuple(W_a.shape)} and W_b {tuple(W_b.shape)}: pass the same matrix twice")
    most = W_b.shape[0] - int(exclude_self)
    if not 1 <= n <= most:
        raise ValueError(f"n must be in 1..{most} (the rows of W_b{' but self' if exclude_self else ''}), "
                         f"got {n}")
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of rows, got {chunk}")
    a = _unit_rows(W_a)
    b = _unit_rows(W_b).to(a.device)
    ids, cos = [], []
    for start in range(0, a.shape[0], chunk):
        sims = a[start:start + chunk] @ b.T  # (chunk, n_b)
        if exclude_self:
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + start] = float("-inf")
        top = sims.topk(n, dim=1)
        ids.append(top.indices)
        cos.append(top.values)
    return torch.cat(ids), torch.cat(cos)


def _unit_rows(W: Tensor) -> Tensor:
    """Rows scaled to unit norm, in float32; a zero row stays zero (cosine 0 with all)."""
    W = W.detach().float()
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass
class Families:
    """feature_families' answer, as rows of dicts a notebook prints as tables
    (`pandas.DataFrame(families.splits)`).

    rows: one per small latent: latent; kind ("one-to-one", "split" or "unmatched");
        best and best_cos, its nearest large latent; family and family_cos, the large
        latents at or above the threshold (nearest first); truncated, whether all `n`
        neighbours looked at were in the family (it may be larger: ask for more `n`).
    splits: the rows of kind "split", largest family first (ties: higher best_cos first).
    summary: counts of one_to_one, splits, unmatched (small latents); large_in_a_family
        and large_unclaimed (large latents in some family, or in none); with
        d_small, d_large, threshold, n.
    """
    rows: list[dict]
    splits: list[dict]
    summary: dict


def feature_families(small: SparseAutoencoder, large: SparseAutoencoder, *,
                     threshold: float = THRESHOLD, n: int = 8, chunk: int = CHUNK) -> Families:
    """Each latent of `small` matched to `large`'s latents by decoder cosine (see the
    module docstring). Both must read the same hook(s) with the same widths, and `small`
    must have no more latents than `large` (swap them otherwise)."""
    _check_pair(small, large)
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine, in -1..1, got {threshold}")
    n = min(n, large.d_sae)
    ids, cos = nearest_latents(small.W_dec, large.W_dec, n, chunk=chunk)
    ids, cos = ids.cpu(), cos.cpu()
    members = cos >= threshold  # (d_small, n); sorted by cos, so the members come first
    size = members.sum(1)
    rows = []
    for i in range(small.d_sae):
        k = int(size[i])
        rows.append({
            "latent": i,
            "kind": "unmatched" if k == 0 else "one-to-one" if k == 1 else "split",
            "best": int(ids[i, 0]), "best_cos": float(cos[i, 0]),
            "family": ids[i, :k].tolist(), "family_cos": [round(float(c), 4) for c in cos[i, :k]],
            "truncated": k == n,
        })
    splits = sorted((r for r in rows if r["kind"] == "split"),
                    key=lambda r: (-len(r["family"]), -r["best_cos"], r["latent"]))
    claimed = torch.unique(ids[members]).numel()
    counts = {kind: sum(r["kind"] == kind for r in rows) for kind in ("one-to-one", "split", "unmatched")}
    summary = {"one_to_one": counts["one-to-one"], "splits": counts["split"],
               "unmatched": counts["unmatched"], "large_in_a_family": claimed,
               "large_unclaimed": large.d_sae - claimed, "d_small": small.d_sae,
               "d_large": large.d_sae, "threshold": threshold, "n": n}
    return Families(rows, splits, summary)


def _check_pair(small: SparseAutoencoder, large: SparseAutoencoder) -> None:
    """One-line errors unless the two dictionaries are comparable, small first."""
    for what in ("hook_in", "hook_out"):
        a, b = getattr(small.cfg, what), getattr(large.cfg, what)
        if a != b:
            raise ValueError(f"the SAEs read different hooks ({what} {a!r} vs {b!r}): decoder "
                             f"directions compare only within one activation space")
    if (small.d_in, small.d_out) != (large.d_in, large.d_out):
        raise ValueError(f"the SAEs have different widths (d_in, d_out) {(small.d_in, small.d_out)} "
                         f"vs {(large.d_in, large.d_out)}: were they trained on different models?")
    if small.d_sae > large.d_sae:
        raise ValueError(f"small has {small.d_sae} latents, more than large's {large.d_sae}: "
                         f"pass them the other way round")


__all__ = ["CHUNK", "THRESHOLD", "Families", "feature_families", "nearest_latents"]
