"""`learnlock protect` as one library call: load, check every output, protect, publish, hand
over the keys, and say what a user should know (a near-zero change, no convergence).

    result = publish("uge", "cifar10", "pub/uge", per_class=100, authorized=["cnn"], key_seed=1)

Nothing is lost: outputs are checked before the work; the keys are written right after it, before
the published data; the resumable work folder is removed only once every output is on disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from ..data import FIXED_SPLITS, load_dataset
from ..data.outdir import check_out_dir, check_writable, clean_stale_temporaries, source_path
from ..errors import LearnlockError
from ..files import atomic_write_json
from ..keys import Key, authorized_keys, check_key_specs, load_key, new_derivation
from ..recipe import get_recipe
from .base import ProtectionContext, get_protection

NEAR_ZERO = 0.05   # warn when the mean change is under 5% of the budget (UGE after 1 epoch: 1.3%)


def publish(method: str, data: str, out, *, settings: dict | None = None, preset: str | None = None,
            per_class: int | None = None, subset_seed: int = 0, split: str = "train",
            authorized: list[str] | None = None, authorized_arch: list[str] | None = None, authorized_seeds: list[int] | None = None,
            key_seed: int | None = None, key_secret: str | None = None, key_out=None,
            include_weights: bool = False, recipe="cpu", overwrite: bool = False, progress: bool = True,
            log=lambda message: None) -> dict:
    """Protect dataset spec `data` with `method` and publish it to `out`. Keys: key files or
    architecture names in `authorized` (with `key_seed` or `key_secret`), or `authorized_arch` x
    `authorized_seeds`. `split` "train" (all of it, or a seeded subset of `per_class`), or a fixed
    range of it: "owner", "aux", "dev" (learnlock.data.splits; the first `per_class` of the range).
    Returns {"path", "keys": [(path, key)], "diagnostics", "warnings"}."""
    cls = get_protection(method)
    if split not in ("train",) + FIXED_SPLITS:
        raise LearnlockError(f"split must be train or one of the fixed splits {FIXED_SPLITS}, got {split!r}")
    # everything that needs no data is checked first: a bad name or setting never waits for a download
    if cls.needs_key and not (authorized or authorized_arch):
        raise LearnlockError(f"{method} needs `authorized` (a key file, or an architecture with `key_seed` or "
                             "`key_secret`), or `authorized_arch` with `authorized_seeds`")
    if not cls.needs_key and (authorized or authorized_arch):
        raise LearnlockError(f"{method} has no authorized network; `authorized` is for methods that take a key")
    cls.resolve_settings(None, preset, **(settings or {}))
    recipe = get_recipe(recipe)
    if cls.needs_key:
        check_key_specs(authorized, authorized_arch, authorized_seeds, key_seed, key_secret)
    out = check_out_dir(out, overwrite, source=data)
    check_key_out(key_out, out, data)
    workdir = out.parent / f".{out.name}.work"
    with exclusive(workdir, out):
        return _publish(cls, data, out, workdir, settings=settings, preset=preset, per_class=per_class,
                        subset_seed=subset_seed, split=split, authorized=authorized, authorized_arch=authorized_arch,
                        authorized_seeds=authorized_seeds, key_seed=key_seed, key_secret=key_secret,
                        key_out=key_out, include_weights=include_weights, recipe=recipe, overwrite=overwrite,
                        progress=progress, log=log)


@contextmanager
def exclusive(workdir: Path, out: Path):
    """Hold an exclusive flock on `workdir` (created if missing) for the whole run: a second run to
    the same `out` is refused at once instead of doing all its work and colliding at the end. The
    kernel releases the lock when the holder dies (kill -9 included), so a killed run never leaves
    a stale lock; its work folder is then resumed."""
    created = not workdir.exists()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(workdir, os.O_RDONLY)
    except OSError as e:
        raise LearnlockError(f"cannot create the work folder {workdir} ({e.strerror or e}); choose another `out`") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LearnlockError(f"another learnlock run is writing {out} now (it holds {workdir}); wait for it to "
                                 "finish, or choose another `out`") from None
        try:
            yield
        except BaseException:
            if created and workdir.is_dir() and not any(workdir.glob("*.safetensors")):
                shutil.rmtree(workdir, ignore_errors=True)  # a run refused before its work leaves nothing behind
            raise
    finally:
        os.close(fd)  # releases the lock


def resumable_state(workdir: Path) -> list[str]:
    """What an interrupted run left in `workdir`: 'NAME (N rounds done)' per state file; a damaged
    one is refused here, before any work."""
    from safetensors import SafetensorError, safe_open

    found = []
    for path in sorted(workdir.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt") as f:
                done = (f.metadata() or {}).get("done")
        except (SafetensorError, OSError, ValueError) as e:
            raise LearnlockError(damaged_state(path, e)) from None
        if done is not None:
            found.append(f"{path.name} ({done} rounds done)")
    return found


def damaged_state(path: Path, error) -> str:
    return (f"the resumable state in {path.parent} is damaged ({path.name}: {error}); delete the folder "
            f"{path.parent} and rerun to start afresh")


def key_derivation(workdir: Path) -> dict:
    """The pass phrase's derivation (scrypt, a fresh salt) for this run, kept in the work folder so
    a resumed run derives the same key."""
    path = workdir / "key-derivation.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise LearnlockError(damaged_state(path, "not valid JSON")) from None
    derivation = new_derivation()
    atomic_write_json(path, derivation)
    return derivation


def _publish(cls, data: str, out: Path, workdir: Path, *, settings, preset, per_class, subset_seed, split, authorized,
             authorized_arch, authorized_seeds, key_seed, key_secret, key_out, include_weights, recipe, overwrite,
             progress, log) -> dict:
    method = cls.name
    source = load_dataset(data, split, per_class=per_class, seed=subset_seed)
    derivation = key_derivation(workdir) if key_secret is not None else None
    keys = authorized_keys(source.num_classes, source.in_channels, authorized, authorized_arch, authorized_seeds,
                           key_seed, key_secret, derivation) if cls.needs_key else []
    context = ProtectionContext([k for k, _ in keys], recipe, progress=progress)
    prot = cls(context, preset=preset, **(settings or {}))
    # one key is issued per authorized network: where they go is checked now, before the work
    paths = key_paths(len(prot.authorized) if cls.needs_key else 0, key_out, out, source, cls.trains_key)
    for stale in clean_stale_temporaries(out):
        log(f"removed {stale}, the temporary folder of an interrupted run")
    resumed = resumable_state(workdir)
    if resumed:
        log(f"resuming an interrupted run from {workdir}: {', '.join(resumed)}")
    log(f"protecting {len(source)} images of {source.source} with {method} (rho {prot.settings.rho:.4f}); "
        f"resumable state in {workdir}")
    # how to reload the clean source (the "Original" row of `learnlock table1`)
    source_load = {"spec": data, "split": split, "per_class": per_class, "seed": subset_seed}
    # how a pass phrase became the key (kdf, salt, cost): public, and needed to derive it again
    extra = {"source_load": source_load, **({"key_derivation": derivation} if derivation else {})}
    images = prot.apply(source, workdir)
    issued = prot.issued_keys(source)  # asked once: final now, also a key the method trained
    # the keys before the data: a key that cannot be written fails while the work is still resumable
    written = write_key_files(issued, paths, {k.fingerprint for k, derived in keys if not derived})
    files = {f"authorized_{i}.safetensors": key_bytes(k) for i, k in enumerate(issued)} if include_weights else None
    path = prot.write(source, images, out, issued, overwrite=overwrite, files=files, extra=extra)
    shutil.rmtree(workdir, ignore_errors=True)  # only once every output is on disk (the lock's fd stays valid)
    return {"path": path, "keys": written, "size": len(source),
            "diagnostics": getattr(prot, "diagnostics", None) or {},
            "warnings": warnings(prot, source, prot.published_images)}


def check_key_out(key_out, out, source_spec: str | None = None) -> None:
    """Refuse, before any work, a `key_out` that is the output folder or inside it (the key would
    be written first and the output then refused), inside the source data, or an existing file
    that is not a learnlock key (never overwritten, never read as an input)."""
    if not key_out:
        return
    path, out = Path(key_out), Path(out)
    if path.resolve() == out.resolve() or path.resolve().is_relative_to(out.resolve()):
        raise LearnlockError(f"`key_out` {path} is the published folder `out` or inside it; the key must be a file "
                             "of its own beside the data (e.g. OUT.key.safetensors); choose another `key_out`")
    src = source_path(source_spec or "")
    if src is not None and (path.resolve() == src.resolve() or path.resolve().is_relative_to(src.resolve())):
        raise LearnlockError(f"{path} is inside the source dataset {src}; never writing into the input; "
                             "choose another `key_out`")
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise LearnlockError(f"`key_out` {path} is a folder; give a file name such as {path}/key.safetensors")
        try:
            load_key(path)
        except LearnlockError:
            raise LearnlockError(f"`key_out` {path} exists and is not a learnlock key file; it is never overwritten; "
                                 "choose another `key_out`") from None
    check_writable(path, "key_out")


def key_paths(count: int, key_out, out: Path, source=None, trained: bool = False) -> list[Path]:
    """Where the `count` issued keys go, in order: `key_out` (default OUT.key.safetensors;
    OUT.key0/1... for several). Refused before any work: a path inside the source data, one that
    cannot be written, a file that is not a key, and any existing file when the method trains its
    key (`trained`): no file written before can hold it."""
    paths = []
    src = source_path(source.source if source is not None else "")
    for i in range(count):
        path = Path(key_out or f"{out}.key.safetensors")
        if count > 1:
            path = path.with_name(f"{path.stem}{i}{path.suffix}")
        if src is not None and (path.resolve() == src.resolve() or path.resolve().is_relative_to(src.resolve())):
            raise LearnlockError(f"{path} is inside the source dataset {src}; never writing into the input; "
                                 "choose another `key_out`")
        check_key_out(path, out)
        if trained and path.exists():
            raise LearnlockError(f"{path} exists and holds another key; choose another `key_out`")
        paths.append(path)
    return paths


def write_key_files(keys: list, paths: list[Path], given: set[str] = frozenset()) -> list[tuple[Path, Key]]:
    """Save keys[i] to paths[i] (atomically, readable by its owner only), except a key the user
    gave (`given` fingerprints: they hold it already). An identical file already there is kept;
    another key is never overwritten. Returns (path, key) for each key handed over."""
    handed = []
    for path, key in zip(paths, keys):
        if key.fingerprint in given:
            continue
        if not path.exists():
            key.save(path, private=True)  # the secret: its owner only
        elif load_key(path).fingerprint != key.fingerprint:
            raise LearnlockError(f"{path} exists and holds another key; choose another `key_out` (the work done "
                                 "so far is kept and resumes)")
        handed.append((path, key))
    return handed


def warnings(prot, source, published: torch.Tensor) -> list[str]:
    """What the user should hear although nothing failed; `published` are the uint8 images written."""
    out = []
    index = prot.protected_index if prot.protected_index is not None else torch.arange(len(source))
    if len(index) and prot.norm in ("linf", "l2"):  # l0 methods change a few pixels by design
        delta = (published[index].int() - source.images[index].int()).abs()
        budget = 255 * prot.settings.rho
        if delta.float().mean().item() < NEAR_ZERO * budget:
            out.append(f"the published images differ from the source by {delta.float().mean().item():.2f} grey levels "
                       f"on average ({100 * (delta > 0).float().mean().item():.1f}% of values changed, at most "
                       f"{delta.max().item()} levels) against a budget of {budget:.1f}: the protection did almost "
                       "nothing; train it longer (more epochs or rounds)")
    converged = prot.manifest_extra().get("converged")
    if converged is False:
        out.append(f"{prot.name} stopped at its round limit without reaching its stop criterion (see the "
                   "manifest's log); the noise may be weaker than intended: raise max_rounds")
    return out


def key_bytes(key) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return key.save(Path(tmp) / "key.safetensors").read_bytes()
