"""The bake-off's suites: ``make demo`` holds a row of every family the full bake-off has,
announces at most 15 minutes, and ``--suite``/``--only`` pick the rows."""
import pytest

from experiments import bakeoff, common
from gen_jax.data.datasets import get_info


@pytest.fixture(scope="module")
def families():
    info = get_info("digits")
    out = {}
    for name, overrides, _ in bakeoff.BAKEOFF:
        exp = common.load_experiment(name, {k: v.format(out="/nonexistent") if isinstance(v, str) else v
                                            for k, v in overrides.items()})
        if not exp.stages:  # two-stage rows need their stage trained; their family is another row's
            out[name] = common.build_model(exp, info).family
    return out


def test_the_demo_has_a_row_of_every_family_of_the_full_bakeoff(families):
    demo = [name for name, _, _ in bakeoff.SUITES["demo"]]
    assert len(demo) == len(set(demo)) == len(bakeoff.DEMO_ROWS)
    assert {families[n] for n in demo} == set(families.values())


def test_the_demo_announces_at_most_15_minutes():
    total = sum(est for _, _, est in bakeoff.SUITES["demo"]) + bakeoff.FEATURE_NET_SECONDS
    assert total <= 15 * 60
    assert bakeoff.SUITES["full"] == bakeoff.BAKEOFF


def test_a_wrong_suite_is_refused(capsys):
    with pytest.raises(SystemExit):
        bakeoff.main(["--suite", "everything", "--out", "/nonexistent/x"])
    assert "--suite: invalid choice: 'everything'" in capsys.readouterr().err
