import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2l_jax.compile_cache import cache_dir
from s2l_jax.weights import read_safetensors


def fresh_env(env_extra, tmp_path):
    """A fresh process's environment (the cache is set up once per process), HOME and XDG_CACHE_HOME in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S2L_", "JAX_COMPILATION_CACHE"))}
    return {**env, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env_extra}


def s2l(args, env_extra, tmp_path):
    """Run `s2l` in a fresh process."""
    done = subprocess.run([sys.executable, "-m", "s2l_jax", *args], env=fresh_env(env_extra, tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def csv(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    return f


def entries(directory):
    return sorted(p.name for p in directory.glob("*-cache"))


def test_second_run_loads_every_executable_from_the_cache_and_trains_identically(tmp_path, csv):
    train = ["train", "--data", str(csv), "--epochs", "2", "--batch-size", "8"]
    s2l([*train, "--out", str(tmp_path / "a")], {}, tmp_path)
    cache = tmp_path / "xdg" / "s2l_jax" / "xla"  # the default place
    first = entries(cache)
    assert any(name.startswith("jit_train_step") for name in first), first
    s2l([*train, "--out", str(tmp_path / "b")], {}, tmp_path)
    assert entries(cache) == first  # nothing compiled anew: every program was a cache hit
    a, _ = read_safetensors(tmp_path / "a" / "model.safetensors")
    b, _ = read_safetensors(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def compile_once(env_extra, tmp_path):
    """What `s2l` does at start-up, then one compile, in a fresh process (~3 s; a whole `s2l train`: ~11 s)."""
    script = "import jax; from s2l_jax.compile_cache import enable_compile_cache as e; e(); jax.jit(abs)(-1.0)"
    done = subprocess.run([sys.executable, "-c", script], env=fresh_env(env_extra, tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "warning" not in done.stderr.lower(), done.stderr


def test_cache_directory_from_the_environment_or_off(tmp_path):
    compile_once({"S2L_COMPILE_CACHE": str(tmp_path / "mine")}, tmp_path)
    assert entries(tmp_path / "mine")
    compile_once({"S2L_COMPILE_CACHE": "off"}, tmp_path)
    assert not [p for p in tmp_path.rglob("*-cache") if "mine" not in p.parts]


def test_unusable_cache_directory_runs_without_a_cache(tmp_path):
    (tmp_path / "file").write_text("")
    compile_once({"S2L_COMPILE_CACHE": str(tmp_path / "file" / "xla")}, tmp_path)
    assert not list(tmp_path.rglob("*-cache"))


@pytest.mark.parametrize("value", ["off", "OFF", "0", "", " no "])
def test_cache_dir_reads_off_values(monkeypatch, value):
    monkeypatch.setenv("S2L_COMPILE_CACHE", value)
    assert cache_dir() is None


def test_cache_dir_defaults_under_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("S2L_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "s2l_jax" / "xla"
    monkeypatch.setenv("S2L_COMPILE_CACHE", "~/x")
    assert cache_dir() == Path.home() / "x"


@pytest.mark.parametrize("value", ["1", "on", "true", " YES "])
def test_cache_dir_reads_on_values_as_the_default_place_not_a_directory_named_so(monkeypatch, tmp_path, value):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("S2L_COMPILE_CACHE", value)
    assert cache_dir() == tmp_path / "s2l_jax" / "xla"
