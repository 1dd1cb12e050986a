"""Pass phrases: a salted, memory-hard derivation (scrypt) recorded in the manifest, and the old
sha256 derivation kept so keys made with it come back from their pass phrase."""

import hashlib
import json

import pytest

from conftest import write_folder
from learnlock import cli
from learnlock.errors import LearnlockError
from learnlock.keys import SCRYPT, new_derivation, resolve_key, seed_from_secret
from learnlock.models import NetSpec


def test_scrypt_seed_is_salted_and_the_old_sha256_path_is_kept():
    a, b = new_derivation(), new_derivation()
    assert a["kdf"] == "scrypt" and a["n"] >= 2 ** 14 and a["salt"] != b["salt"] and len(a["salt"]) == 32
    assert seed_from_secret("correct horse", a) == seed_from_secret("correct horse", dict(a))  # deterministic
    assert seed_from_secret("correct horse", a) != seed_from_secret("correct horse", b)      # the salt counts
    expected = hashlib.scrypt(b"correct horse", salt=bytes.fromhex(a["salt"]), n=a["n"], r=a["r"], p=a["p"], dklen=8)
    assert seed_from_secret("correct horse", a) == int.from_bytes(expected, "big") >> 1 < 2 ** 63
    old = int.from_bytes(hashlib.sha256(b"correct horse").digest()[:8], "big") >> 1
    assert seed_from_secret("correct horse", {"kdf": "sha256"}) == old  # keys made before scrypt
    assert seed_from_secret("correct horse") != old
    with pytest.raises(LearnlockError, match="empty"):
        seed_from_secret("")
    with pytest.raises(LearnlockError, match="derivation is damaged"):
        seed_from_secret("x", {**SCRYPT, "salt": "not hex"})


def test_protect_records_the_derivation_and_the_pass_phrase_gives_the_key_back(tmp_path, capsys):
    write_folder(tmp_path / "src", per_class=2, size=(8, 8))
    out, key_out = tmp_path / "pub", tmp_path / "k.safetensors"
    rc = cli.main(["protect", "--method", "uge", "--data", f"folder:{tmp_path / 'src'}", "--out", str(out),
                   "--authorized", "cnn", "--key-secret", "a long pass phrase of six words", "--key-out", str(key_out),
                   "--set", "epochs=1", "--set", "encoder_resolution=32", "--set", "diagnostics=false",
                   "--authorized-epochs", "1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    derivation = manifest["extra"]["key_derivation"]
    assert derivation["kdf"] == "scrypt" and derivation["salt"]
    again = resolve_key("cnn", 3, 3, secret="a long pass phrase of six words", derivation=derivation)
    assert again.fingerprint == NetSpec.load(key_out).fingerprint
    assert not (tmp_path / ".pub.work").exists()
