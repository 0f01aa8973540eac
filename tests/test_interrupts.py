"""graceful_stop: SIGINT/SIGTERM set a flag, a second signal interrupts, handlers come back, threads are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from immersivedepth.interrupts import StopFlag, graceful_stop

REPO = Path(__file__).resolve().parents[1]


def _deliver(sig: int) -> None:
    """Send ``sig`` to this process and give the interpreter a few bytecodes to run the handler."""
    os.kill(os.getpid(), sig)
    for _ in range(100):
        time.sleep(0.001)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_sets_flag_second_interrupts(sig, code):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt, match="second"):
        with graceful_stop() as stop:
            assert stop.active and not stop
            _deliver(sig)
            assert stop.requested and stop.signum == sig and stop.exit_code == code
            assert stop.signal_name == signal.Signals(sig).name
            _deliver(signal.SIGTERM if sig == signal.SIGINT else signal.SIGINT)  # either kind insists
            pytest.fail("the second signal must interrupt at once")
    assert {s: signal.getsignal(s) for s in before} == before


def test_handlers_restored_after_normal_exit():
    marker = []
    old = signal.signal(signal.SIGTERM, lambda s, f: marker.append(s))
    try:
        with graceful_stop() as stop:
            _deliver(signal.SIGTERM)
        assert stop.requested and marker == []  # our handler, not the previous one, saw it
        _deliver(signal.SIGTERM)
        assert marker == [signal.SIGTERM]  # the previous handler is back
    finally:
        signal.signal(signal.SIGTERM, old)


def test_ignored_signal_stays_ignored():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with graceful_stop() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            _deliver(signal.SIGINT)
            assert not stop.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_off_main_thread_does_nothing():
    seen: list[StopFlag] = []
    errors: list[BaseException] = []
    before = signal.getsignal(signal.SIGTERM)

    def work():
        try:
            with graceful_stop() as stop:
                seen.append(stop)
                assert signal.getsignal(signal.SIGTERM) is before
        except BaseException as exc:  # surfaced below: an exception in a thread would otherwise vanish
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors and len(seen) == 1 and not seen[0].active and not seen[0].requested
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_in_a_real_process_saves_and_exits_143(tmp_path):
    """A loop like the trainer's: SIGTERM (docker stop, pre-emption) lets it save its state and exit 143."""
    out = tmp_path / "state.txt"
    ready = tmp_path / "ready"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from immersivedepth.interrupts import graceful_stop\n"
        "with graceful_stop() as stop:\n"
        "    step = 0\n"
        "    Path(sys.argv[2]).touch()\n"
        "    while not stop.requested and step < 10**7:\n"
        "        step += 1; time.sleep(0.001)\n"
        "Path(sys.argv[1]).write_text(f'saved at step {step}')\n"
        "sys.exit(stop.exit_code)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out), str(ready)], cwd=REPO, stderr=subprocess.PIPE,
                            text=True)
    try:
        for _ in range(3000):
            if ready.exists():
                break
            time.sleep(0.01)
        assert ready.exists(), "the child never started its loop"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert out.read_text().startswith("saved at step ")
    assert "SIGTERM received: finishing the current step and saving" in err and "Traceback" not in err
