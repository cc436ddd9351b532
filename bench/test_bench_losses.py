"""pytest-benchmark suite: each (case, provider) of a preset is one benchmark.

    pytest bench/ --benchmark-only                                  # quick preset
    pytest bench/ --benchmark-only --bench-preset full --bench-losses dice --bench-device cuda

Cases, providers, floor, memory and the row are the ones bench/main.py uses (_plan, _run);
here pytest-benchmark does the timing: a host clock around each call followed by a device
synchronisation. The floor, GB/s, roofline fraction and extra memory go into extra_info
(shown with --benchmark-json / --benchmark-columns). Benchmarks are grouped by case so the
providers of one case are compared side by side.

Without --benchmark-only every benchmark here is skipped, so a plain `pytest` run that
collects bench/ does not spend minutes timing.
"""

import _plan
import _run
import _timing
import pytest

PLAN_KEY = pytest.StashKey()
EXTRA_INFO_KEYS = ("variant", "numel", "classes", "target_shape", "floor_bytes", "gbps", "roofline", "extra_mem_bytes",
                   "first_call_s", "loss_value")


def _plan_for(config) -> _plan.Plan:
    if PLAN_KEY not in config.stash:
        config.stash[PLAN_KEY] = _plan.make_plan(config.getoption("bench_preset", default="quick"),
                                                 config.getoption("bench_device", default=None),
                                                 config.getoption("bench_losses", default=None),
                                                 config.getoption("bench_providers", default=None),
                                                 config.getoption("bench_triton_interpreter", default=False))
    return config.stash[PLAN_KEY]


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    plan = _plan_for(metafunc.config)
    metafunc.parametrize("case", plan.cases, ids=[case.label.replace(" ", "-") for case in plan.cases])
    metafunc.parametrize("provider_name", [provider.name for provider in plan.providers])


@pytest.fixture(scope="session")
def plan(pytestconfig):
    if not pytestconfig.getoption("benchmark_only", default=False):
        pytest.skip("timing runs only with --benchmark-only")
    return _plan_for(pytestconfig)


@pytest.fixture(scope="session")
def copy_bytes_per_s(plan):
    # Timed like the benchmarks below: host clock around a synchronised call.
    return _timing.copy_bandwidth_bytes_per_s(plan.device, plan.preset.timing, use_events=False)


def test_loss(benchmark, plan, copy_bytes_per_s, case, provider_name):
    timing = plan.preset.timing

    def sampler(step):
        def synchronised_step():
            step()
            _timing.synchronize(plan.device)

        benchmark.pedantic(synchronised_step, rounds=timing.repeats, warmup_rounds=timing.warmup, iterations=1)
        return list(benchmark.stats.stats.data)

    benchmark.group = case.label
    row = _run.measure(case, plan.provider(provider_name), plan.device, timing, copy_bytes_per_s, sampler=sampler)
    benchmark.extra_info.update({key: row[key] for key in EXTRA_INFO_KEYS})
    if row["status"] == "skipped":
        pytest.skip(row["note"])
    if row["status"] == "error":
        pytest.fail(row["note"])
