import pytest
import torch

# torch's oneDNN LSTM path is up to 40x slower on some CPU shapes here; results agree to < 1e-8.
torch.backends.mkldnn.enabled = False
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
