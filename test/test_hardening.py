"""Issue 13, hardening for a real arm: each item's faults injected into live nodes over real DDS
(and the real CLI, files and bags) by scripts/fault_injection.py, one test per item; plus the
pure checks behind them."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from latent_vs import bags
from latent_vs.errors import UserError
from latent_vs.learning.export import load_checkpoint_file, read_state
from latent_vs.replay import RUN_KEY, ServoSettings, replay_offline
from latent_vs.ros.record import record_simulation
from latent_vs.safety import (future_problem, image_size_problem, latent_norm_problem, latent_norm_record,
                              setting_problem)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("fault_injection", os.path.join(ROOT, "scripts", "fault_injection.py"))
fi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fi)


# ---------------------------------------------------------------- live faults, one test per item

@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    pytest.importorskip("rclpy")
    return fi.run(set(fi.ITEMS), tmp_path_factory.mktemp("faults"))


def _item(rows, n):
    mine = [r for r in rows if r[0].startswith(f"{n} ")]
    assert mine, f"no case for item {n}"
    bad = [r for r in mine if not r[3]]
    assert not bad, "\n" + fi.table(bad)
    return mine


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("item", sorted(fi.ITEMS), ids=[f"{k}-{v.replace(' ', '_')}" for k, v in sorted(fi.ITEMS.items())])
def test_item(rows, item):
    mine = _item(rows, item)
    if item == 1:   # both signals, each node, idle and busy
        assert len(mine) == 12
    if item == 8:   # camera_info (issue 14): match, mismatch under strict, NaN and zero K, match again
        assert len(mine) == 5


# ---------------------------------------------------------------- the checks behind them

def test_setting_ranges():
    assert setting_problem("gain", 0.5) is None and setting_problem("converged_steps", 5) is None
    for name, value in (("gain", 0.0), ("gain", 1e9), ("gain", float("nan")), ("gain", "1"), ("gain", True),
                        ("converged_steps", 2.5), ("max_linear_speed", float("inf")), ("input_timeout", -1)):
        assert name in setting_problem(name, value)
    for he in ([1.7e308, 0, 0, 0, 0, 0], [1e300, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1e300], [0] * 5, "x"):
        assert "hand_eye" in setting_problem("hand_eye", he)
    assert setting_problem("hand_eye", [0.1, 0, 0.05, 0, 0, 3.14]) is None


def test_image_sizes():
    for h, w in ((480, 640), (1080, 1920), (3000, 4000), (224, 224), (16, 16)):
        assert image_size_problem(h, w) is None
    for h, w in ((1, 4000), (4000, 1), (8, 8), (100, 1000), (9000, 9000)):
        assert image_size_problem(h, w)


def test_latent_norm_and_future_stamps():
    rec = latent_norm_record(np.ones((3, 4)), np.zeros((2, 4)))
    assert rec["max"] == 2.0 and rec["bound"] == 8.0 and rec["count"] == 5
    assert latent_norm_problem(np.ones(4), 8.0) is None
    assert "latent norm" in latent_norm_problem(np.full(4, 1e6, np.float32), 8.0)
    assert "latent norm" in latent_norm_problem(np.array([1e38, 1e38], np.float32), 8.0)   # no float32 overflow
    assert future_problem(10.05, 10.0, 0.1) is None and "future" in future_problem(15.0, 10.0, 0.1)


def test_shipped_models_bound_their_latents():
    from latent_vs.control import mlvs
    from latent_vs.servo import LatentLaw
    own = json.load(open(os.path.join(ROOT, "models", "own_scene", "meta.json")))
    assert own["latent_norm"]["bound"] > own["latent_norm"]["max"] > 0
    law = LatentLaw(mlvs.make(model_dir=os.path.join(ROOT, "models", "own_scene")))
    assert law.norm_bound == own["latent_norm"]["bound"] and law.norm_bound_source == "meta.json"


def test_crafted_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    torch.save({"modules": {"psi": Evil()}}, tmp_path / "evil.pt")
    for load in (lambda p: load_checkpoint_file(p), lambda p: read_state(p, "psi")):
        with pytest.raises(UserError, match="refused: .* would run code when loaded"):
            load(str(tmp_path / "evil.pt"))
    assert not marker.exists()
    torch.save({"modules": {"psi": {"w": torch.zeros(2)}}, "step": 3, "history": [{"a": 1.0}]}, tmp_path / "ok.pt")
    assert load_checkpoint_file(str(tmp_path / "ok.pt"))["step"] == 3


def test_bag_chunks_carry_crcs_and_damage_stops_reading(tmp_path):
    bag = tmp_path / "b"
    record_simulation(str(bag), ServoSettings(method="pbvs", gain=1.0), "mcap", steps=40, rate=10.0)
    f = next(bag.glob("*.mcap"))
    chunks = list(bags._mcap_chunks(f))
    assert len(chunks) >= 2 and all(crc == actual != 0 for _o, _t, crc, actual in chunks)
    with bags.Bag(bag) as b:
        assert b.corruption is None
        n_all = sum(1 for _ in b.messages(["/image"]))
    data = bytearray(f.read_bytes())
    off = chunks[-1][0] + 4 + 100_000
    data[off] ^= 0xFF
    f.write_bytes(bytes(data))
    with bags.Bag(bag) as b:
        assert "fails its CRC check" in b.corruption
        n = sum(1 for _ in b.messages(["/image"]))
    assert 0 < n < n_all
    res = replay_offline(str(bag), progress=False)
    assert res.summary["images"] == n and "corrupt" in res.summary["corruption"]


def test_stored_settings_are_checked(tmp_path):
    bag = tmp_path / "b"
    with bags.BagWriter(bag) as w:
        w.set_custom_data(RUN_KEY, json.dumps(dict(ServoSettings(method="pbvs").__dict__, hand_eye=[1e300, 0, 0, 0, 0, 0])))
        w.write("/image", bags.image_msg(np.zeros((64, 64), np.uint8), 1), 1)
    with pytest.raises(UserError, match="stored controller settings are refused: hand_eye"):
        replay_offline(str(bag), progress=False)
    assert "gain" in ServoSettings(gain=-1.0).problem()
    assert ServoSettings().problem() is None
