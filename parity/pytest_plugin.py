"""pytest plugin (registered as the `s2l_parity` pytest11 entry point): a `parity_check` fixture and a `parity`
marker, so a user's CI test is

    def test_same(parity_check):
        parity_check(torch_model, flax_model, variables, tokens)

`@pytest.mark.parity(rtol=..., atol=..., gradients=False, lengths=...)` sets the defaults of the test's checks.
Each report's summary is attached to the test's `user_properties` (shown in JUnit XML). torch is imported only
when a check runs, so the plugin costs nothing in projects that do not use it.
"""

from __future__ import annotations

import pytest

MARKER = "parity(rtol=None, atol=None, gradients=True, lengths=None): defaults for the parity_check fixture"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


@pytest.fixture
def parity_check(request: pytest.FixtureRequest):
    """`parity_check(torch_module, flax_module, variables, *inputs, **options)` -> ParityReport; fails the test
    with the first tensor out of tolerance (see `parity.assert_parity`)."""
    from parity.check import assert_parity

    marker = request.node.get_closest_marker("parity")
    if marker and marker.args:
        raise TypeError("@pytest.mark.parity takes keyword arguments only (rtol=, atol=, gradients=, lengths=), "
                        f"got {marker.args}")
    defaults = dict(marker.kwargs) if marker else {}

    def check(torch_module, flax_module, variables, *inputs, **options):
        __tracebackhide__ = True
        try:
            report = assert_parity(torch_module, flax_module, variables, *inputs, **{**defaults, **options})
        except AssertionError as e:
            request.node.user_properties.append(("parity", str(e).splitlines()[0]))
            raise
        request.node.user_properties.append(("parity", report.summary()))
        return report

    return check
