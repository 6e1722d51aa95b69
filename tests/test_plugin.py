"""The pytest plugin as a user meets it: installed by the entry point, a test of a few lines passes for the same
model, fails naming the tensor for a different one, and the marker sets the tolerance."""

pytest_plugins = ["pytester"]

USER_TESTS = '''
import pytest
import torch
from parity import from_torch
from parity.torch_models import SEED_MODELS

torch.backends.mkldnn.enabled = False


def _models(nudge=0.0):
    torch.manual_seed(0)
    tm = SEED_MODELS["last"](vocab_size=10, embedding_dim=3, hidden_dim=4, num_classes=2)
    fm, variables = from_torch(tm, pooling="last")
    variables["params"]["fc"]["bias"] = variables["params"]["fc"]["bias"] + nudge
    return tm, fm, variables, torch.randint(0, 10, (2, 5))


def test_same(parity_check):
    parity_check(*_models())


def test_different(parity_check):
    parity_check(*_models(nudge=1e-3))


@pytest.mark.parity(rtol=1e-2, atol=1e-2)
def test_different_within_a_loose_marker_tolerance(parity_check):
    report = parity_check(*_models(nudge=1e-3))
    assert report.tolerance.atol == 1e-2


@pytest.mark.parity(1e-2)
def test_positional_marker_tolerance(parity_check):
    parity_check(*_models())
'''


def test_plugin_fixture_and_marker_work_in_a_users_test_file(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider", "--junitxml=out.xml")
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*TypeError: @pytest.mark.parity takes keyword arguments only*",
                                 "*ParityError: parity FAIL*first failure: weight fc.bias*"])
    assert 'name="parity" value="parity PASS' in (pytester.path / "out.xml").read_text()


def test_installed_plugin_does_not_need_torch_for_pytest_to_start(tmp_path):
    import subprocess
    import sys

    plain = "def test_plain():\n    assert __import__('sys').modules['torch'] is None  # blocked, never imported\n"
    (tmp_path / "test_plain.py").write_text(plain)
    code = ("import sys; sys.modules['torch'] = None; import pytest; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
