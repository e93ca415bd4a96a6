"""The run directory has one writer and one reader (`train/rundir.py`): scores read back bit for bit,
metric rows and TensorBoard scalars agree. (Runs written by both trainers are read back through rundir
in tests/test_pyramid_sweep.py, which already trains both.)"""
import struct

import numpy as np

from cervix_jax import metrics as M
from cervix_jax.train import rundir
from cervix_jax.train.scoring import eval_result


def test_scores_round_trip_exactly(tmp_path, rng):
    scored = {}
    for split, n in (("val", 17), ("test", 23)):
        scored[split] = {"id": rng.permutation(1000)[:n], "label": rng.integers(0, 2, n),
                         "score": rng.random(n).astype(np.float32) ** 7}   # tiny values too
    result = eval_result(scored, step=5, blur=0)
    rundir.write_eval(tmp_path, result, scored)
    assert rundir.eval_done(tmp_path) and rundir.read_eval(tmp_path) == result
    for split, sc in scored.items():
        back = rundir.read_scores(tmp_path, split)
        np.testing.assert_array_equal(back["id"], sc["id"])
        np.testing.assert_array_equal(back["label"], sc["label"])
        assert back["score"].dtype == np.float64
        np.testing.assert_array_equal(back["score"], sc["score"].astype(np.float64))   # bit for bit
    # the metrics of the read-back scores are the stored ones (scikit-learn-checked binary_metrics)
    t = M.choose_threshold(scored["val"]["score"], scored["val"]["label"])
    assert result["thresholds"]["val_chosen"] == t


def events(workdir) -> dict:
    """{tag: [(step, value)]} parsed from the TensorBoard event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2
    out = {}
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_metrics_rows_and_tensorboard_agree_and_resume_drops_later_rows(tmp_path, rng):
    rows = [{"step": s, "epoch": 0, "split": "train", "loss": float(rng.random())} for s in (1, 2, 3)]
    log = rundir.MetricsLog(tmp_path)
    for r in rows:
        log.append(r)
    log.close()
    assert rundir.read_metrics(tmp_path) == rows
    tb = events(tmp_path)
    np.testing.assert_allclose([v for _, v in tb["train/loss"]], [r["loss"] for r in rows], rtol=1e-6)
    assert [s for s, _ in tb["train/loss"]] == [1, 2, 3]
    rundir.MetricsLog(tmp_path, resume_step=2).close()     # a run resumed from step 2
    assert rundir.read_metrics(tmp_path) == rows[:2]
