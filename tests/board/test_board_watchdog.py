"""The board's watchdog: host silence (or a closed port) ramps every output to 0 V at the
slew limit and latches the safe state until the host re-arms it."""
from __future__ import annotations

import time

import numpy as np
import pytest

from host.board import Board, RemoteSafeState


def test_outputs_ramp_to_zero_after_host_silence(linear_url) -> None:
    url = linear_url + "&max_slew=1&watchdog_ms=300"
    with Board.open(url, heartbeat=False) as b:
        b.set([0.6, -0.6, 0.0, 0.0, 0.0, 0.3, -0.3], ramp=False)    # 0.6 s at 1 V/s
        np.testing.assert_allclose(b.outputs()["volts"][:2], [0.6, -0.6], atol=1e-4)
        t_quiet = time.monotonic()
        time.sleep(0.4)                                            # > 300 ms of silence
        trace = []
        while time.monotonic() - t_quiet < 1.3:
            trace.append(np.abs(b.outputs()["volts"]).max())
            time.sleep(0.03)
        trace = np.array(trace)
        assert trace[0] > 0.15, "the ramp should still be under way"      # slew-limited, no jump
        assert trace[-1] == pytest.approx(0.0, abs=1e-4)
        assert np.all(np.diff(trace) <= 1e-9), "monotonic ramp to 0 V"
        assert b.status()["state_name"] == "safe"
        assert "WATCHDOG" in [e["name"] for e in b.errors()]
        with pytest.raises(RemoteSafeState):
            b.set([0.1] * 5 + [0.0] * 2)
        b.rearm()
        b.set([0.1] * 5 + [0.0] * 2)


def test_port_close_latches_safe_state(served_sim) -> None:
    with Board.open(served_sim.url) as b:
        b.set([0.2] * 5 + [0.0] * 2, ramp=False)
        b._stop_hb.set()
        b._closed = True            # drop the link without zeroing: a vanished host
        b._link.close()
    time.sleep(0.1)     # a pty shows the hang-up (EIO) only while nobody has the slave open
    with Board.open(served_sim.url, arm=False) as b:
        st = b.status()
        assert st["state_name"] == "safe" and not st["armed"]
        errs = b.errors()
        assert any(e["name"] == "WATCHDOG" and e["arg"] == 2 for e in errs)   # 2: port closed
        time.sleep(0.1)
        np.testing.assert_allclose(b.outputs()["volts"], 0.0, atol=1e-4)
        b.rearm()
