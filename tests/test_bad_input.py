"""The bad-input suite (issue 12): ``python perf_runner.py`` against bad inputs and faults, one case per class at least.

Every case asserts the exit code (2 for a user error, 0 for a handled input, 143 after SIGTERM), that no traceback
is printed, that the error is ONE ``error:`` line naming the key or file and what to do (printed once), that no
temporary file is left behind, and its own check of the outputs (nothing deleted, nothing half-written, nothing
wrong). The cases live in ``tests/bad_input_cases.py`` (shared with ``scripts/bad_input_matrix.py``).

The selected cases run as concurrent subprocesses from one module fixture (they are mostly interpreter start-up),
sharing one tiny trained run that cases needing a trained field copy. Cases that need runner wiring still to land
are ``xfail(strict=True)``: when the wiring lands they pass, and strict xfail makes the suite say so.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from bad_input_cases import CASES, Case, Env, Result, error_lines, problems, run_case, tiny_inputs, train_template

# Subprocesses at once: start-up is mostly single-threaded imports, so a few overlap well on 2 cores.
CONCURRENCY = 3


def _param(case: Case):
    marks = []
    if case.slow:
        marks.append(pytest.mark.slow)
    if case.wiring:
        marks.append(pytest.mark.xfail(strict=True, reason=f"needs runner wiring: {case.wiring}"))
    elif case.todo:
        marks.append(pytest.mark.xfail(strict=True, reason=f"not fixed yet: {case.todo}"))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, tuple[Env, Result]]:
    """Run every selected case once (concurrently) -> {case id: (env, result)}."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.module.__name__ == __name__ and hasattr(item, "callspec") and "case" in item.callspec.params}
    cases = [c for c in CASES if c.id in selected]
    root = tmp_path_factory.mktemp("bad_input")
    inputs = tiny_inputs(root / "inputs")
    trained = train_template(root / "template", inputs) if any(c.needs_trained for c in cases) else None
    envs = {c.id: Env(work=root / c.id, inputs=inputs, trained=trained) for c in cases}
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        futures = {c.id: pool.submit(run_case, c, envs[c.id]) for c in cases}
        return {cid: (envs[cid], f.result()) for cid, f in futures.items()}


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, outcomes):
    env, result = outcomes[case.id]
    found = problems(case, env, result)
    detail = "\n".join(error_lines(result)) or result.stderr[-2000:]
    assert not found, f"{case.id} ({case.issue_class}): {found}\nexit {result.returncode}\n{detail}"


def test_every_issue_class_has_a_default_case():
    classes = {c.issue_class for c in CASES if not c.slow}
    assert {"traceback", "warning", "silent", "lost", "vague", "failed-status"} <= classes
