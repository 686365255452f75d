import pytest

from models.errors import CancelledError
from models.progress import Reporter


def test_fraction_grows_over_weighted_stages_to_one():
    seen = []
    r = Reporter(callback=seen.append, stage_weights={"global": 1, "patch": 3})
    for i in range(1, 3):
        r.step("global", i, 2)
    r.finish_stage("global")
    for i in range(1, 5):
        r.step("patch", i, 4)
    fr = [p.fraction for p in seen]
    assert fr == sorted(fr)
    assert fr[1] == pytest.approx(0.25) and fr[-1] == pytest.approx(1.0)
    assert seen[-1].stage == "patch" and seen[-1].step == 4


def test_cancel_raises_at_the_next_step():
    flag = {"stop": False}
    r = Reporter(cancel=lambda: flag["stop"], stage_weights={"global": 1})
    r.step("global", 1, 10)
    flag["stop"] = True
    with pytest.raises(CancelledError):
        r.step("global", 2, 10)
