"""Test-wide settings: every IR stage the pipeline produces is verified."""
import pytest

import jitgrad.config


@pytest.fixture(autouse=True, scope="session")
def verify_every_stage():
    saved = jitgrad.config.config.verify_ir
    jitgrad.config.config.verify_ir = True
    yield
    jitgrad.config.config.verify_ir = saved
