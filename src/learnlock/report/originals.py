"""The clean originals of a published dataset, for `learnlock report`: found (`load_originals`)
and compared with the published images (`image_quality`: PSNR, SSIM, the residual).
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from ..errors import LearnlockError

LOCAL_SPECS = ("folder", "npz")  # dataset specs read from local files only: never a download


def load_originals(published_dir, manifest: dict, data, originals: str | None = None):
    """(clean originals in the published order, or None; words on where they came from or why not).
    `originals` is a dataset spec (its train split); without it, the source the manifest names is
    read when it is a local folder or npz file (a named dataset could need a download)."""
    from ..data import load_dataset

    if originals:
        clean = load_dataset(originals, "train")
        note = f"originals: {originals}"
    else:
        src = (manifest.get("extra") or {}).get("source_load")
        if not src:
            return None, "not measured (no originals given: --originals DATA_SPEC)"
        if src["spec"].partition(":")[0] not in LOCAL_SPECS:
            return None, (f"not measured (no originals given; the source {src['spec']} is not a local folder or "
                          "npz file: give --originals DATA_SPEC)")
        try:
            clean = load_dataset(src["spec"], src["split"], per_class=src["per_class"], seed=src["seed"])
        except LearnlockError as e:
            return None, f"not measured (the source {src['spec']} cannot be read: {e}; give --originals DATA_SPEC)"
        note = f"originals: the source {src['spec']} the manifest names"
    where = {item: i for i, item in enumerate(clean.ids)}
    missing = [item for item in data.ids if item not in where]
    if missing:
        if not originals:
            return None, (f"not measured (the source {src['spec']} no longer holds {len(missing)} of the published "
                          "items; give --originals DATA_SPEC)")
        raise LearnlockError(f"`originals` {originals} does not hold {len(missing)} of the {len(data)} published "
                             f"items of {published_dir} (e.g. {missing[0]!r}); give the dataset they were made from")
    clean = clean.subset([where[item] for item in data.ids])
    if tuple(clean.images.shape) != tuple(data.images.shape):
        raise LearnlockError(f"originals {clean.source} have images of shape {tuple(clean.images.shape[1:])}, the "
                             f"published ones {tuple(data.images.shape[1:])}; give the dataset they were made from")
    # same ids are not the same images (npz ids are indices): each item may move only as far as the budget allows
    from ..data.manifest import change_bound

    moved = (data.images.float() - clean.images.float()).abs().flatten(1).mean(1)
    # the ids already match, so this only tells another dataset with the same names apart: the whole
    # budget (keyed's 32/255 moves an item by up to 32 grey levels on average), not the test-set
    # check's 16-level cap
    bound = change_bound(manifest, cap=64.0)
    worst = int(moved.argmax())
    if float(moved[worst]) > bound:
        message = (f"{clean.source} is not what {published_dir} was made from: item {data.ids[worst]!r} differs by "
                   f"{float(moved[worst]):.1f} grey levels on average, more than the published budget allows "
                   f"({bound:.1f})")
        if originals:
            raise LearnlockError(f"`originals` {message}; give the dataset they were made from")
        return None, f"not measured ({message}; give --originals DATA_SPEC)"
    return clean, note


def image_quality(clean, protected, index: Sequence[int]) -> dict:
    """PSNR (dB, over all protected items together) and mean SSIM (scikit-image) of the protected
    items against their originals, and the residual (published - clean, grey levels)."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    index = list(index)
    if not index:
        return {"psnr_db": None, "ssim": None, "residual": None, "count": 0}
    c = clean.images[index].permute(0, 2, 3, 1).numpy()
    p = protected.images[index].permute(0, 2, 3, 1).numpy()
    d = p.astype(np.int16) - c.astype(np.int16)
    psnr = float(peak_signal_noise_ratio(c, p, data_range=255)) if d.any() else math.inf
    side = min(c.shape[1], c.shape[2])
    win = min(7, side if side % 2 else side - 1)
    ssim = (statistics.fmean(float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=win))
                             for a, b in zip(c, p)) if win >= 3 else None)
    return {"psnr_db": psnr, "ssim": ssim, "count": len(index), "ssim_window": win if win >= 3 else None,
            "residual": {"linf": int(np.abs(d).max()), "mean_abs": float(np.abs(d).mean()),
                         "rms": float(np.sqrt((d.astype(np.float64) ** 2).mean())),
                         "changed": float((d != 0).mean())}}
