"""engine.device: where a trial runs and in which memory format its network computes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.device import eval_chunk, place, resolve_device
from engine.errors import ConfigError
from engine.trainer import build_trial


def conv_weights(net: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_cpu_trials_run_channels_last_end_to_end(tiny_cfg):
    """The trial's network is channels-last on the CPU, and so are the activations every norm
    layer passes on (a layer that copied to NCHW would show here)."""
    for norm in ("bn", "tbbn", "adab2n", "ln", "gn", "cn", "brn"):  # not in: torch's copies to NCHW
        dataset, method = build_trial(tiny_cfg(norm=norm, data_args={"image_size": 16}).resolved(),
                                      torch.device("cpu"))
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(method.net))
        inputs = []
        convs = [m for m in method.net.modules() if isinstance(m, nn.Conv2d)]
        hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.append(args[0])) for m in convs[1:]]
        x, y = dataset.tasks[0].x_train[:4], dataset.tasks[0].y_train[:4]
        method.observe(x, y)
        for h in hooks:
            h.remove()
        # past the stem, every conv's input is a norm layer's output (through ReLU / the residual sum)
        assert inputs and all(t.is_contiguous(memory_format=torch.channels_last) for t in inputs), norm


def test_place_keeps_nchw_off_the_cpu_and_moves_parameters():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    place(net, torch.device("meta"))
    assert all(p.device.type == "meta" for p in net.parameters())
    assert net[0].weight.is_contiguous()


def test_resolve_device_and_eval_chunks():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cannot be used: "):
            resolve_device("cuda:0")
    assert eval_chunk(torch.device("cpu")) == 32 and eval_chunk(torch.device("meta")) == 1024


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA cannot start")
def test_a_cuda_device_that_cannot_start_is_one_line_with_the_drivers_reason():
    with pytest.raises(ConfigError) as refused:
        resolve_device("cuda")
    text = str(refused.value)
    assert text.startswith("device='cuda' cannot be used: ") and "\n" not in text
    assert text != "device='cuda' cannot be used: no CUDA device is visible; use --device cpu or auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the CPU's is None")
def test_a_gpu_is_named_by_the_uuid_nvml_and_cuda_visible_devices_use():
    from engine.device import device_uuid
    import pynvml

    uuid = device_uuid(torch.device("cuda:0"))
    pynvml.nvmlInit()
    try:
        nvml = {pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
                for i in range(pynvml.nvmlDeviceGetCount())}
    finally:
        pynvml.nvmlShutdown()
    assert uuid in {u.decode() if isinstance(u, bytes) else u for u in nvml}
