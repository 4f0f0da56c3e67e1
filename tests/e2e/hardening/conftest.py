"""One stack for the security and reliability tests of this package, and the case they act on.

The tests here attack the services from outside, over HTTP, as a client would: bad input
(schemathesis), every command against every role, bad tokens, concurrent clients, and the
database roles the services connect as. They share one stack (package scope) because
starting one takes half a minute and none of them needs a stack of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.embedded import EmbeddedBroker
from tests.conftest import Stack, running_stack
from tests.e2e.hardening.support import World, new_world


@pytest.fixture(scope="package")
def stack(scratch: Callable[[str], Path], broker: EmbeddedBroker) -> Iterator[Stack]:
    """The whole stack, started with `chengneng up`, shared by every module of this package."""
    with running_stack(scratch("hardening") / ".chengneng", "--kafka-bootstrap", broker.bootstrap) as s:
        yield s


@pytest.fixture(scope="package")
def world(stack: Stack) -> World:
    return new_world(stack)
