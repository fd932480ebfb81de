"""Test-wide settings: every IR stage the pipeline produces is verified."""
import pytest

import jitgrad.config


@pytest.fixture(autouse=True, scope="session")
def verify_every_stage():
    saved = jitgrad.config.config.verify_ir
    jitgrad.config.config.verify_ir = True
    yield
    jitgrad.config.config.verify_ir = saved


@pytest.fixture(autouse=True, scope="session")
def private_compile_cache(tmp_path_factory):
    """Compiled code is cached in a directory of this test session, not the user's."""
    saved = jitgrad.config.config.cache_dir
    jitgrad.config.config.cache_dir = str(tmp_path_factory.mktemp("jitgrad-cache"))
    yield
    jitgrad.config.config.cache_dir = saved
