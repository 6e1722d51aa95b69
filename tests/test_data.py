import subprocess
import sys

import numpy as np

from s2l_jax.data import Dataset, batches, eval_batch_size, load_default, split


def test_default_dataset_is_real_digits_offline():
    d = load_default()
    assert d.inputs.shape == (1797, 8, 8) and sorted(set(d.labels.tolist())) == list(range(10))


def test_default_dataset_read_without_scikit_learn_equals_load_digits():
    from sklearn.datasets import load_digits

    d, ref = load_default(), load_digits()
    np.testing.assert_array_equal(d.inputs, (ref.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(d.labels, ref.target)


def test_default_dataset_loads_without_importing_scikit_learn():
    code = "import sys; from s2l_jax.data import load_default; load_default(); print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_split_is_disjoint_and_covers_everything():
    d = load_default()
    tr, va = split(d)
    assert len(tr) + len(va) == len(d) and len(va) == int(len(d) * 0.2)


def test_batches_have_fixed_size_and_power_of_two_padded_lengths():
    lengths = np.array([1, 3, 5, 9, 17, 2, 4], np.int32)
    d = Dataset(np.ones((7, 20), np.int32), lengths, np.zeros(7, np.int32), ("a",))
    shapes = {x.shape for x, _, _, _ in batches(d, 2)}
    counts = [c for *_, c in batches(d, 2)]
    assert all(s[0] == 2 for s in shapes) and {s[1] for s in shapes} <= {1, 2, 4, 8, 16, 20}
    assert sum(counts) == 7


def test_eval_batch_size_is_a_power_of_two_bounded_by_steps_rows_and_devices():
    def data(rows, steps):
        return Dataset(np.ones((rows, steps), np.int32), np.full(rows, steps, np.int32), np.zeros(rows, np.int32),
                       ("a",))

    assert eval_batch_size(data(1000, 40)) == 256  # EVAL_ROWS
    assert eval_batch_size(data(1000, 4096)) == 16  # EVAL_CELLS / steps
    assert eval_batch_size(data(1000, 5000)) == 8  # the power of two below 65536 / 5000 = 13
    assert eval_batch_size(data(5, 40)) == 8  # the power of two above the rows, not 256 rows of padding
    assert eval_batch_size(data(1000, 40), devices=3) == 258  # splits over the devices
    assert eval_batch_size(data(1, 100_000)) == 1
