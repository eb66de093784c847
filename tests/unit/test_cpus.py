import os

import pytest

from genq.cpus import parse_cpus, pin_process
from genq.errors import ValidationError


def test_lists_and_ranges() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("0-3") == {0, 1, 2, 3}
    assert parse_cpus("0,2,4-5") == {0, 2, 4, 5}


@pytest.mark.parametrize("text", ["", "a", "3-1", "-1", "0-", "1,,2"])
def test_bad_lists_name_the_option(text: str) -> None:
    with pytest.raises(ValidationError, match="--cpus") as caught:
        parse_cpus(text)
    assert caught.value.field == "cpus"


def test_cores_not_here_are_refused_and_the_affinity_is_kept() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(ValidationError, match="not available"):
        pin_process(str(max(before) + 1000))
    assert os.sched_getaffinity(0) == before
