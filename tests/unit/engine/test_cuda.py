"""The GPU paths, marked `cuda`: AMP and channels_last training, torch.compile, EMA, compression
and the DDP hook's encode/decode on the accelerator, with the CPU path as the reference where
the results are deterministic.

They run on a CUDA device when there is one. Without one they are skipped, except in the GPU
kit's dry mode (benchmarks/gpu.sh --dry sets TRAINKIT_DRY=1), which runs them on the CPU so the
kit is known to work before it meets a GPU.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from src.averaging.ema import EMA
from src.compression import packing
from src.compression.compressors import MinMax, ScaledSign, Sign
from src.compression.exchange import GradientExchange, ddp_hook
from src.models.resnet_cifar import resnet20
from src.tasks.classify import run
from tests.helpers.exchange import exchange, steps
from tests.helpers.postgres import free_port
from tests.helpers.runs import compose_train

pytestmark = pytest.mark.cuda
CPU = torch.device("cpu")


@pytest.fixture
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("TRAINKIT_DRY") == "1":
        return CPU
    pytest.skip("needs a CUDA GPU (benchmarks/gpu.sh --dry runs these tests on the CPU)")


def test_training_with_amp_and_channels_last_on_the_device(device, tmp_path):
    cfg = compose_train(["debug=fast", "model=mnist_cnn", f"device={device.type}",
                         "trainer.amp=bf16", "trainer.channels_last=true",
                         "trainer.progress=false", "logger=none"])
    objective = run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and 0.0 <= objective <= 1.0
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["metrics"].values())


def test_channels_last_forward_equals_contiguous(device):
    torch.manual_seed(0)
    model = resnet20((3, 32, 32), 10).to(device).eval()
    x = torch.randn(8, 3, 32, 32, device=device)
    with torch.no_grad():
        eager = model(x)
        fast = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fast, eager, atol=1e-4, rtol=1e-4)


def test_compiled_forward_and_training_equal_eager(device, tmp_path):
    torch.manual_seed(0)
    model = resnet20((3, 32, 32), 10).to(device).eval()
    x = torch.randn(8, 3, 32, 32, device=device)
    with torch.no_grad():
        assert torch.allclose(torch.compile(model)(x), model(x), atol=1e-4, rtol=1e-4)
    args = ["debug=fast", f"device={device.type}", "trainer.progress=false",
            "logger=none", "trainer.amp=off"]
    run(compose_train(args), tmp_path / "eager")
    run(compose_train([*args, "trainer.compile=true"]), tmp_path / "compiled")
    eager, compiled = (json.loads((tmp_path / n / "summary.json").read_text())["metrics"]
                       for n in ("eager", "compiled"))
    assert compiled["test_acc"] == pytest.approx(eager["test_acc"], abs=0.02)


@pytest.mark.parametrize("workers", [1, 2])
def test_compiled_with_cuda_graphs_trains_like_eager(device, tmp_path, workers):
    # trainer.compile=reduce-overhead: CUDA graphs for a small net, with EMA after each step and,
    # for 2 simulated workers, two graph replays per step.
    args = ["debug=fast", "model=resnet20", "dataset=fake", "dataset.source.num_train=600",
            "dataset.source.num_test=200", "dataset.val_size=100", f"device={device.type}",
            f"workers={workers}", "trainer.progress=false", "logger=none",
            "trainer.amp=off"]
    run(compose_train(args), tmp_path / "eager")
    run(compose_train([*args, "trainer.compile=reduce-overhead"]), tmp_path / "graphs")
    eager, graphs = (json.loads((tmp_path / n / "summary.json").read_text())
                     for n in ("eager", "graphs"))
    assert graphs["status"] == "completed"
    assert graphs["metrics"]["test_acc"] == pytest.approx(eager["metrics"]["test_acc"], abs=0.05)
    assert graphs["metrics"]["val_loss"] == pytest.approx(eager["metrics"]["val_loss"], rel=0.05)


def test_ema_on_the_device_equals_the_cpu(device):
    torch.manual_seed(0)
    models = {d: resnet20((3, 32, 32), 10).to(d) for d in (CPU, device)}
    models[device].load_state_dict(models[CPU].state_dict())
    emas = {d: EMA(m, [0.9, 0.999], warmup={"gamma": 1.0, "power": 0.75})
            for d, m in models.items()}
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for d, m in models.items():
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.01 * torch.randn(p.shape, generator=g).to(d))
            emas[d].update()
    for name in emas[CPU].names:
        for k, v in emas[CPU].state_of(name).items():
            assert torch.allclose(emas[device].state_of(name)[k].cpu(), v, atol=1e-6), (name, k)


@pytest.mark.parametrize("make", [lambda: Sign(rand_zero=False), ScaledSign],
                         ids=["sign", "scaled_sign"])  # the compressors that draw nothing
def test_deterministic_encode_decode_and_packing_on_the_device_equal_the_cpu(device, make):
    g = torch.randn(2, 4096, generator=torch.Generator().manual_seed(0))
    g[0, :7] = 0.0
    out = {}
    for d in (CPU, device):
        comp = make()
        state = comp.init_state((2, 4096), d)
        codes, scales = comp.encode(g.to(d), state, None, None)
        low = comp.levels()[0]
        packed = packing.pack(codes, low, comp.bits, comp.zero_free)
        unpacked = packing.unpack(packed, low, comp.bits, codes.numel(), comp.zero_free)
        out[d] = (codes.cpu(), comp.decode(codes, scales).cpu(), packed.cpu(),
                  unpacked.view_as(codes).cpu())
    for a, b in zip(out[CPU], out[device], strict=True):
        assert torch.equal(a, b) if not a.is_floating_point() else torch.allclose(a, b)
    assert torch.equal(out[CPU][3], out[CPU][0])  # the packing round trip


def test_the_ddp_hook_encodes_and_decodes_on_the_device(device):
    """One DDP rank on the device with the compressed hook (sign, vote, tie zero): its
    gradients are the signs of the plain CPU gradients."""
    torch.manual_seed(0)
    cpu_model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    cpu_model(x).square().sum().backward()
    want = [p.grad.sign() for p in cpu_model.parameters()]
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(device)
    model.load_state_dict(cpu_model.state_dict())
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        exchange = GradientExchange(Sign(rand_zero=False), aggregate="vote", tie="zero")
        exchange.setup(list(model.parameters()), 1, [0])
        exchange.start_epoch(lambda stream: stream)
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        ddp.register_comm_hook(exchange, ddp_hook)
        ddp(x.to(device)).square().sum().backward()
        got = [p.grad.cpu() for p in model.parameters()]
    finally:
        dist.destroy_process_group()
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert exchange.bytes_sent > 0


@pytest.mark.parametrize("make", [lambda: MinMax(1), lambda: MinMax(2, decay=0.9)],
                         ids=["minmax1", "minmax2-lin"])
def test_the_compiled_exchange_step_equals_the_eager_one_on_the_device(device, make):
    # Triton kernels on a GPU; the random bytes come from the device's generators in both paths.
    eager = steps(*exchange(make(), "false", 4, 100_003, device), 3)
    fused = steps(*exchange(make(), "true", 4, 100_003, device), 3)
    for a, b in zip(eager, fused, strict=True):
        assert torch.equal(a, b)
