"""The one way a scenario opens a published folder: `open_published`.

    opened = open_published("pub/keyed", key="pub/keyed.key.safetensors", test="cifar10", out="runs/audit")
    opened.data, opened.manifest, opened.key, opened.key_recipe, opened.clean, opened.test

table1, `learnlock train`, audit and certify open their folders here, so they read the key, the
clean source and the test set by one policy (see `open_published`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import ImageDataset, load_dataset
from ..data.base import check_test_set
from ..data.manifest import change_bound, manifest_recipe, unverified
from ..data.published import check_writable, load_published, published_fingerprint
from ..errors import LearnlockError
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


__all__ = ["Opened", "check_same_items", "open_published"]
