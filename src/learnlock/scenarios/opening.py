"""The one way a scenario opens a published folder: `open_published`.

    opened = open_published("pub/keyed", key="pub/keyed.key.safetensors", test="cifar10", out="runs/audit")
    opened.data, opened.manifest, opened.key, opened.key_recipe, opened.clean, opened.test

table1, `learnlock train`, audit and certify open their folders here, so they read the key, the
clean source and the test set by one policy (see `open_published`). Bench scripts make their
protected sets once here too: `publish_once` (a published folder) and `protected_cell` (pixels in
the cell cache).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..cells import cell_inputs
from ..data import ImageDataset, load_dataset
from ..data.base import check_test_set
from ..data.manifest import change_bound, manifest_recipe, unverified
from ..data.published import check_writable, load_published, published_fingerprint
from ..errors import LearnlockError
from ..files import atomic_write_json
from ..keys import check_key_matches, load_key
from ..training import Recipe

SHIPPED_KEY = "authorized_0.safetensors"  # written into the folder by protect --include-weights


@dataclass
class Opened:
    """A published folder as a scenario reads it."""

    path: Path
    data: ImageDataset             # the published images (every file's sha256 checked)
    manifest: dict
    key: object | None             # NetSpec or LockKey, checked against the manifest; None without one
    key_recipe: Recipe | None      # the authorized user's recipe (the manifest's), with a key
    clean: ImageDataset | None     # the clean source of the same items, or None
    test: ImageDataset | None      # the clean test set, or None

    @property
    def source(self) -> dict | None:
        """How to reload the clean source ({"spec", "split", "per_class", "seed"}), if recorded."""
        return (self.manifest.get("extra") or {}).get("source_load")

    @property
    def fingerprint(self) -> str:
        return published_fingerprint(self.manifest)


def open_published(published_dir, key=None, *, test: str | bool | None = None, test_per_class: int | None = None,
                   clean: str | bool | None = None, clean_per_class: int | None = None, subset_seed: int = 0,
                   out=None, log=lambda message: None) -> Opened:
    """Open a published folder with its key, clean source and test set, by one policy:

    - `out` (the caller's output) is checked writable first, then the key file is read: a wrong
      file or folder fails before any image is read.
    - `key`: a key file, a loaded key, or None for the key shipped in the folder (protect
      --include-weights), used with a note that a key travelling with the data cannot authenticate
      it. A key must be one of the manifest's authorized networks and must verify its MAC, else
      the one "wrong key" / "does not match its authentication code" error. With no key at all
      the manifest is used unverified (a LearnlockWarning says so).
    - `clean`: a dataset spec (its train split, `clean_per_class` items per class drawn with
      `subset_seed`); None for the source the manifest records (reloaded with its own recorded
      subset and seed), or no clean set, with a note, when it records none; True for the recorded
      source, an error when it records none (table1's Original row needs it); False: not loaded.
      A clean set must hold exactly the published items.
    - `test`: a dataset spec; None (or True) for the recorded source's test split, an error naming
      `test` when none is recorded; False: not loaded. `test_per_class` items per class drawn with
      `subset_seed` (0 by default: table1 and `train` drew their test subset with 0, audit and
      certify with `subset_seed`; now every scenario takes `subset_seed`). The test set is refused
      when it repeats the training images: checked against the clean set when there is one, else
      against the published images within the protection's change bound.
    """
    path = Path(published_dir)
    clean = None if clean == "" else clean  # an empty flag is no flag
    if out:
        check_writable(out)
    if isinstance(key, (str, Path)):
        key = load_key(key)
    data, manifest = load_published(path)
    if key is None and (path / SHIPPED_KEY).exists():
        log(f"note: using the key shipped in {published_dir}; a key that travels with the data cannot "
            "authenticate it (anyone holding the folder can re-sign an edited manifest)")
        key = load_key(path / SHIPPED_KEY)
    key_recipe = None
    if key is not None:
        check_key_matches(key, manifest)
        key_recipe = manifest_recipe(manifest)
    else:
        unverified(manifest, path / "manifest.json")
    source = (manifest.get("extra") or {}).get("source_load")
    clean_set = None
    if isinstance(clean, str):
        clean_set = load_dataset(clean, "train", per_class=clean_per_class, seed=subset_seed)
    elif clean is not False and source:
        clean_set = load_dataset(source["spec"], source["split"], per_class=source["per_class"], seed=source["seed"])
    elif clean is True:
        raise LearnlockError(f"{published_dir}: manifest does not say how to reload its clean source; "
                             "it was not written by `learnlock protect`")
    elif clean is None:
        log("note: no clean baseline (the manifest does not say how to reload its source; give `clean`); "
            "learnability ratios will be n/a")
    if clean_set is not None:
        check_same_items(clean_set, data, str(published_dir))
    test_set = None
    if test is not False:
        spec = test if isinstance(test, str) and test else (source["spec"] if source else None)
        if not spec:
            raise LearnlockError("give the clean test set with `test`")
        test_set = load_dataset(spec, "test", per_class=test_per_class, seed=subset_seed)
        if clean_set is not None:
            check_test_set(clean_set, test_set)
        else:  # published pixels moved by up to rho from the source's
            check_test_set(data, test_set, tolerance=change_bound(manifest))
    return Opened(path, data, manifest, key, key_recipe, clean_set, test_set)


def check_same_items(clean: ImageDataset, published: ImageDataset, name: str) -> None:
    """Refuse a clean set that does not hold the published items (their ids, in order)."""
    if clean.ids != published.ids:
        raise LearnlockError(f"{name}: its items are not those of the clean set {clean.source} (ids differ); "
                             "give as `clean` the dataset it was protected from, and compare datasets protected "
                             "from the same source")


def publish_once(out_dir, make_protection, data: ImageDataset, want: dict, *, workdir=None,
                 log=lambda message: None) -> tuple[Opened, float]:
    """Publish `data` into `out_dir` once, for bench scripts that keep many published sets: a record
    `<out_dir>.json` beside it holds `want` (JSON: what the set depends on, method, settings, seeds)
    and the seconds protecting took. With the same `want` the folder is opened again; otherwise it is
    removed and `make_protection()` protects anew (the min-min is the slow part and must not rerun when
    unrelated code changes, so the code version is not part of it); a killed run resumes from its
    state in `workdir` (default `<parent>/work/<name>`) under the same `want`. The issued key goes to
    `<out_dir>.key.safetensors`. Returns (the folder opened without clean or test set, seconds)."""
    out = Path(out_dir)
    meta, key_path = out.parent / f"{out.name}.json", out.parent / f"{out.name}.key.safetensors"
    if not (out.exists() and meta.exists() and json.loads(meta.read_text()).get("want") == want):
        shutil.rmtree(out, ignore_errors=True)
        key_path.unlink(missing_ok=True)
        work = Path(workdir) if workdir else out.parent / "work" / out.name
        stamp = work / "want.json"   # a killed run resumes from its state only under the same want
        if work.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != want):
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(stamp, want)
        start = time.perf_counter()
        prot = make_protection()
        prot.protect(data, out, workdir=work)
        keys = prot.issued_keys(data)
        if keys:
            keys[0].save(key_path, overwrite=True)
        seconds = time.perf_counter() - start
        atomic_write_json(meta, {"want": want, "seconds": round(seconds, 1), "extra": prot.manifest_extra()})
        log(f"[protect] {out.name}: {seconds:.0f} s")
    opened = open_published(out, key_path if key_path.exists() else None, test=False, clean=False)
    return opened, json.loads(meta.read_text())["seconds"]


def protected_cell(cache, protection, data: ImageDataset, *, log=lambda message: None) -> tuple:
    """The protected pixels of `data` as one cell of `cache` (a `cells.CellCache`), for bench tiers
    that keep many protected sets without a folder each: a pure function of the data, the method,
    its resolved settings and the issued key, computed once (resumable: the min-min's state lives in
    the cell's work folder until the cell is written) and then read back. Returns (uint8 images,
    the record: seconds protecting, settings, manifest extra; the issued key or None)."""
    keys = protection.issued_keys(data)
    key = keys[0] if keys else None
    inputs = cell_inputs(data=data, method=protection.name, settings=protection.manifest_settings(), key=key)
    record = {}

    def compute():
        work = cache.path("protect", inputs, ".work")
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        images = protection.apply(data, work)
        record.update(wall_time_s=round(time.perf_counter() - start, 1), settings=protection.manifest_settings(),
                      extra=protection.manifest_extra())
        log(f"[protect] {protection.name}: {record['wall_time_s']} s")
        return {"images": images}

    images = cache.run_tensors("protect", inputs, compute, meta=lambda: record)["images"]
    return images, record or cache.get("protect", inputs), key   # computed here, or the stored record


__all__ = ["Opened", "check_same_items", "open_published", "protected_cell", "publish_once"]
