"""Speed-ups of the denoiser: each keeps the fp32 interface and the prediction within a stated tolerance."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from models.acceleration import (
    Acceleration,
    PreparedUNet,
    accelerate,
    bf16_is_fast,
    bucket_size,
    networks_of,
    prepare_unet,
    resolve_acceleration,
    set_attention,
    warm_up,
    warmup_batches,
)
from models.errors import BadInputError
from models.unet import build_unet

# bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4 %); through ~20 layers of a random-weight
# U-Net that compounds to a few percent of the output's RMS. fp32 rearrangements stay near 1e-5.
BF16_TOL_REL_RMS = 0.1
FP32_TOL = 1e-4


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unet("tiny", in_channels=3, out_channels=1, sample_size=32)


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, 32, 32, generator=g), torch.tensor([999, 10][:batch] + [500] * max(0, batch - 2))


def test_prepared_unet_takes_and_returns_fp32_nchw_whatever_the_network_precision():
    net = prepare_unet(_tiny(), Acceleration(dtype=torch.bfloat16, channels_last=True))
    assert next(net.unet.parameters()).dtype == torch.bfloat16
    x, t = _inputs()
    eps = net(x, t).sample
    assert eps.dtype == torch.float32 and eps.shape == (2, 1, 32, 32)
    assert eps.is_contiguous()  # NCHW again: the pipeline's stitching sees plain tensors
    (tuple_eps,) = net(x, t, return_dict=False)
    torch.testing.assert_close(tuple_eps, eps, rtol=0, atol=0)


def test_bf16_channels_last_prediction_matches_fp32_within_tolerance():
    x, t = _inputs()
    ref = prepare_unet(_tiny(), Acceleration.reference())(x, t).sample
    fast = prepare_unet(_tiny(), Acceleration(dtype=torch.bfloat16, channels_last=True))(x, t).sample
    rms = ref.pow(2).mean().sqrt()
    assert (fast - ref).abs().max() < BF16_TOL_REL_RMS * rms
    assert (fast - ref).abs().max() > 0  # it really ran in bf16


def test_fp32_speedups_change_the_prediction_only_by_rounding():
    x, t = _inputs()
    ref = prepare_unet(_tiny(), Acceleration.reference())(x, t).sample
    fast = prepare_unet(_tiny(), Acceleration(channels_last=True, sdpa=True))(x, t).sample
    torch.testing.assert_close(fast, ref, rtol=0, atol=FP32_TOL)


def test_static_batches_pad_to_a_power_of_two_and_return_only_the_real_rows():
    net = prepare_unet(_tiny(), Acceleration(static_batches=True))
    seen: list[int] = []
    net.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    x, t = _inputs(batch=3)
    eps = net(x, t).sample
    assert seen == [4] and eps.shape[0] == 3
    plain = prepare_unet(_tiny(), Acceleration())(x, t).sample
    torch.testing.assert_close(eps, plain, rtol=0, atol=FP32_TOL)


@pytest.mark.parametrize(("n", "bucket"), [(1, 1), (2, 2), (3, 4), (8, 8), (9, 16), (17, 32)])
def test_bucket_size_is_the_next_power_of_two(n, bucket):
    assert bucket_size(n) == bucket


def test_set_attention_switches_every_attention_block():
    unet = _tiny()
    n_blocks = sum(isinstance(m, Attention) for m in unet.modules())
    assert n_blocks > 0
    assert set_attention(unet, sdpa=False) == n_blocks
    assert all(type(m.processor) is AttnProcessor for m in unet.modules() if isinstance(m, Attention))
    set_attention(unet, sdpa=True)
    assert all(type(m.processor) is AttnProcessor2_0 for m in unet.modules() if isinstance(m, Attention))


def test_prepared_weights_appear_once_and_are_frozen():
    net = prepare_unet(_tiny(), Acceleration())
    assert isinstance(net, PreparedUNet)
    assert len(net.state_dict()) == len(net.unet.state_dict())
    assert not any(p.requires_grad for p in net.parameters())
    assert net.config.in_channels == 3 and net.dtype == torch.float32


def test_optimised_cpu_configuration_uses_bf16_only_where_it_is_native():
    accel = Acceleration.optimised_for("cpu")
    assert accel.channels_last and accel.compile_mode is None
    assert accel.dtype == (torch.bfloat16 if bf16_is_fast("cpu") else torch.float32)


def test_reference_configuration_is_fp32_nchw_eager_explicit_attention():
    ref = Acceleration.reference()
    assert (ref.dtype, ref.channels_last, ref.compile_mode, ref.sdpa) == (torch.float32, False, None, False)
    assert Acceleration.from_dict(ref.to_dict()) == ref


@pytest.mark.parametrize("bad", [{"dtype": "float8"}, {"compile_mode": "fastest"}])
def test_unknown_dtype_or_compile_mode_is_bad_input(bad):
    with pytest.raises(BadInputError):
        Acceleration(**bad)


@pytest.mark.slow
def test_compiled_unet_matches_eager_with_static_batches():
    x, t = _inputs(batch=3)
    eager = prepare_unet(_tiny(), Acceleration())(x, t).sample
    compiled = prepare_unet(_tiny(), Acceleration(compile_mode="default", static_batches=True))
    torch.testing.assert_close(compiled(x, t).sample, eager, rtol=0, atol=FP32_TOL)


# -- the served path's settings (MAMMOGEN_ACCELERATION, --acceleration) ---------------------------------
@pytest.mark.parametrize(
    "accel",
    [
        Acceleration.reference(),
        Acceleration(),
        Acceleration(dtype=torch.bfloat16, channels_last=True),
        Acceleration(dtype=torch.bfloat16, channels_last=True, compile_mode="reduce-overhead", static_batches=True),
    ],
)
def test_a_label_names_its_configuration(accel):
    back = Acceleration.from_label(accel.label)
    assert back.with_(cudnn_benchmark=accel.cudnn_benchmark) == accel


@pytest.mark.parametrize("bad", ["", "bfloat16+turbo", "int8+sdpa"])
def test_an_unknown_label_is_bad_input(bad):
    with pytest.raises(BadInputError):
        Acceleration.from_label(bad)


def test_settings_resolve_to_the_measured_fastest_reference_or_an_explicit_label():
    assert resolve_acceleration("auto", "cpu") == Acceleration.optimised_for("cpu")  # eager: no compile on CPU
    assert resolve_acceleration("optimised", "cpu") == Acceleration.optimised_for("cpu")
    assert resolve_acceleration("reference", "cpu") == Acceleration.reference()
    assert resolve_acceleration("float32+channels_last+sdpa", "cpu").label == "float32+channels_last+sdpa"
    # an explicit dtype (MAMMOGEN_DTYPE) wins over the configuration's; auto keeps it
    assert resolve_acceleration("auto", "cpu", "float32").dtype == torch.float32
    assert resolve_acceleration("reference", "cpu", "auto") == Acceleration.reference()
    # CUDA graphs need CUDA: a CPU worker keeps the compile without them
    assert resolve_acceleration("float32+compile=reduce-overhead+sdpa", "cpu").compile_mode == "default"


def test_accelerate_prepares_each_network_once_however_many_pipelines_hold_it():
    from models.anomaly import AnomalyPipeline
    from models.mambo import MamboPipeline, random_mambo_networks
    from models.superres import SuperResolutionPipeline

    nets = random_mambo_networks("tiny", 32)
    mambo = MamboPipeline(nets["global"], nets["local"], nets["patch"])
    anomaly = AnomalyPipeline(mambo)
    accel = Acceleration(dtype=torch.bfloat16, channels_last=True)
    accelerate(anomaly, accel)
    prepared = networks_of(mambo)
    assert set(prepared) == {"global_unet", "local_unet", "patch_unet"}
    assert all(n.acceleration == accel for n in prepared.values())
    assert anomaly.global_unet is mambo.global_unet and anomaly.patch_unet is mambo.patch_unet
    again = networks_of(accelerate(SuperResolutionPipeline(mambo), Acceleration()))  # re-prepared, not re-wrapped
    assert all(n.unet is prepared[k].unet and n.dtype == torch.float32 for k, n in again.items())


@pytest.mark.parametrize(
    ("accel", "max_batch", "batches"),
    [
        (Acceleration(), 16, [1]),  # eager: one call creates the kernels
        (Acceleration(compile_mode="default", static_batches=True), 16, [1, 2, 4, 8, 16]),
        (Acceleration(compile_mode="default", static_batches=True), 12, [1, 2, 4, 8, 16]),  # 12 pads to 16
    ],
)
def test_warm_up_covers_every_batch_bucket_a_compiled_network_can_see(accel, max_batch, batches):
    assert warmup_batches(accel, max_batch) == batches
    net = prepare_unet(_tiny(), accel.with_(compile_mode=None))
    seen: list[int] = []
    net.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    warm_up(net, (32, 32), batches)
    assert seen == batches


def test_warm_up_gives_a_class_conditional_network_the_no_class_label():
    """A lesion network (or a class-conditional stage) refuses a call without labels: warming passes "no
    class", as the samplers do for the unconditional branch (else a worker could not load such a bundle)."""
    torch.manual_seed(0)
    unet = build_unet("tiny", in_channels=4, out_channels=1, sample_size=32, classes=3)
    net = prepare_unet(unet, Acceleration())
    seen: list[list[int]] = []
    unet.register_forward_pre_hook(lambda _m, args, kw: seen.append(kw["class_labels"].tolist()), with_kwargs=True)
    warm_up(net, (32, 32), [1, 2])
    assert seen == [[3], [3, 3]]  # null_class: the last embedding


def test_accelerate_prepares_the_lesion_network_too(tmp_path):
    """Insertion runs the bundle's lesion network: the CLI and the worker prepare it like the stage networks."""
    from models.bundle import create_random_bundle
    from models.lesion_insertion import LesionInserter

    bundle = create_random_bundle(tmp_path / "b", preset="tiny", lesion_network=True)
    accel = Acceleration(dtype=torch.bfloat16, channels_last=True)
    inserter = accelerate(LesionInserter.from_bundle(bundle), accel)
    prepared = networks_of(inserter.mambo)
    assert set(prepared) == {"global_unet", "local_unet", "patch_unet", "lesion_unet"}
    assert inserter.unet is inserter.mambo.lesion_unet and inserter.unet.acceleration == accel
    assert next(inserter.unet.unet.parameters()).dtype == torch.bfloat16
