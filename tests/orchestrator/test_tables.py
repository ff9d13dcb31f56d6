"""Step tables on Ray: 1 range and 4 ranges agree exactly; finished ranges are not recomputed."""

import numpy as np
import pytest

from ardm.data import convert_dataset
from orchestrator.tables import distributed_step_table, step_ranges
from tests.support.reference import checkpoint_of

pytestmark = pytest.mark.slow


def test_step_ranges_cover_every_step_on_call_boundaries():
    ranges = step_ranges(100, 4, 16)
    assert [s for r in ranges for s in r] == list(range(100))
    assert all(r.start % 16 == 0 for r in ranges) and len(ranges) <= 4
    assert step_ranges(10, 8, 16) == [range(0, 10)]


def test_one_range_and_four_ranges_agree_exactly(ray_cluster, trained_digits, tmp_path):
    model, _ = trained_digits
    ckpt = checkpoint_of(model, tmp_path / "c.pt")
    convert_dataset("digits", str(tmp_path / "data"), 1000)
    data = f"parquet:{tmp_path / 'data'}"
    kwargs = {"num_steps": model.num_steps, "samples_per_step": 3, "steps_per_call": 8, "seed": 5, "num_images": 60}
    one = distributed_step_table(str(ckpt), data, str(tmp_path / "one"), num_ranges=1, **kwargs)
    four = distributed_step_table(str(ckpt), data, str(tmp_path / "four"), num_ranges=4, **kwargs)
    assert one.is_complete() and len(list((tmp_path / "four" / "parts").iterdir())) == 4
    # By default the table's images are training images, spread over the split, and the file says which.
    assert one.metadata["split"] == "train" and len(one.metadata["images"].split(",")) == 60
    for col in ("stage", "t", "nll_bits", "stderr_bits", "n"):
        assert np.array_equal(getattr(one, col), getattr(four, col)), col
    # Resume: a finished range is reused as it is, a missing one is computed again.
    parts = sorted((tmp_path / "four" / "parts").iterdir())
    kept = parts[0].stat().st_mtime_ns
    parts[1].unlink()
    again = distributed_step_table(str(ckpt), data, str(tmp_path / "four"), num_ranges=4, **kwargs)
    assert parts[0].stat().st_mtime_ns == kept and parts[1].exists()
    assert np.array_equal(again.nll_bits, one.nll_bits)
