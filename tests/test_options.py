"""One vocabulary of sampling options and typed requests: validated once, JSON round trips, no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from models.errors import BadInputError
from models.options import SamplingOptions, request_seeds
from models.requests import AnomalyConfig, GenerationRequest, SuperResConfig
from workers.job_requests import AnomalyMapJob, GenerateJob, StoredUpload, SuperResolveJob


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"sampler": "euler"}, "sampler"),
        ({"steps": 0}, "steps"),
        ({"steps": 1001}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"eta": 1.5}, "eta"),
        ({"eta": "0"}, "eta"),
        ({"stitching": "spiral"}, "stitching"),
        ({"max_batch": 0}, "max_batch"),
        ({"seeds": ()}, "seed"),
        ({"seeds": (-1,)}, "seed"),
        ({"fused_weights": "gauss"}, "fused_weights"),
    ],
)
def test_every_bad_option_is_a_bad_input_error_naming_it(kw, named):
    with pytest.raises(BadInputError, match=named):
        SamplingOptions(**kw)


def test_options_normalise_and_round_trip_through_json():
    import json

    opts = SamplingOptions("ddpm", 3.0, 1, "fused", 4, [7, 8], skip_background=0)  # type: ignore[arg-type]
    assert (opts.steps, opts.eta, opts.seeds, opts.skip_background) == (3, 1.0, (7, 8), False)
    assert SamplingOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts
    with pytest.raises(BadInputError, match="unknown sampling option"):
        SamplingOptions.from_dict({"num_inference_steps": 3})


def test_the_request_seed_rule():
    assert request_seeds(5, 3) == (5, 6, 7)
    drawn = request_seeds(None, 2)
    assert drawn[1] == drawn[0] + 1 and 0 <= drawn[0] < 2**31
    with pytest.raises(BadInputError, match="count"):
        request_seeds(0, 0)


def test_typed_requests_round_trip_and_refuse_what_cannot_run():
    jobs = [
        GenerateJob(GenerationRequest("mambo", 96, 64, "L", SamplingOptions(seeds=(1, 2))), ("npy", "png16", "npy")),
        SuperResolveJob(
            request=SuperResConfig(16, stand_in="global"), upload=StoredUpload("input.png", "png", 20, 30, "ab")
        ),
        AnomalyMapJob(
            request=AnomalyConfig(lam=5, threshold_mode="fixed", threshold=0.1),
            upload=StoredUpload("input.dcm", "dicom", 9, 9, ""),
        ),
    ]
    assert jobs[0].formats == ("npy", "png16") and jobs[0].request.chest_wall == "left"
    for job in jobs:
        assert type(job).from_dict(job.to_dict()) == job
    with pytest.raises(BadInputError, match="fixed size"):
        GenerationRequest("dualview", height=64)
    with pytest.raises(BadInputError, match="one seed"):
        SuperResConfig(options=SamplingOptions(seeds=(1, 2)))
    with pytest.raises(BadInputError, match="formats"):
        GenerateJob(GenerationRequest(), ("jpeg",))
    with pytest.raises(BadInputError, match="unknown request field"):
        GenerationRequest.from_dict({"model": "mambo", "num_inference_steps": 3})


def test_the_options_and_requests_import_no_torch():
    code = "import sys, models.options, models.requests, workers.job_requests; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("command", "kind", "argv"),
    [
        ("generate", "mambo", ["--out", "o"]),
        ("dualview", "dualview", ["--out", "o"]),
        ("super-resolve", "superres", ["in.png", "--out", "o"]),
        ("anomaly-map", "anomaly", ["in.png", "--out", "o"]),
    ],
)
def test_api_cli_and_requests_share_one_table_of_sampling_defaults(command, kind, argv):
    """What a request that names no sampler/steps gets, through each door, is the job kind's row."""
    from app.api.schemas import AnomalyMapParams, GenerateRequest, SuperResolveParams
    from app.cli.common import sampling_options
    from app.cli.main import build_parser
    from models.options import SAMPLING_DEFAULTS, default_options
    from models.requests import ANOMALY_OPTIONS, SUPERRES_OPTIONS

    row = SAMPLING_DEFAULTS[kind]
    expected = (row.sampler, row.steps[row.sampler])
    api = {
        "mambo": lambda: GenerateRequest(seed=0),
        "dualview": lambda: GenerateRequest(model="dualview", seed=0),
        "superres": lambda: SuperResolveParams(seed=0),
        "anomaly": lambda: AnomalyMapParams(seed=0),
    }[kind]().build_request()
    args = build_parser(command).parse_args([command, *argv])
    cli = sampling_options(args, (0,))
    model = {
        "mambo": GenerationRequest().options,
        "dualview": GenerationRequest("dualview").options,
        "superres": SUPERRES_OPTIONS,
        "anomaly": ANOMALY_OPTIONS,
    }[kind]
    for options in (api.options, cli, model, default_options(kind)):
        assert (options.sampler, options.steps) == expected


def test_a_request_naming_only_its_sampler_gets_that_samplers_steps_for_its_kind():
    from app.api.schemas import AnomalyMapParams, GenerateRequest
    from models.options import SAMPLING_DEFAULTS, default_sampling

    assert default_sampling("anomaly") == ("ddpm", 1000)  # the recipe: lambda + 1 calls from lambda
    for kind in ("mambo", "dualview", "superres"):  # bench steps on the demo bundles (docs/PERFORMANCE.md §7)
        assert default_sampling(kind) == ("ddim", 50) and default_sampling(kind, "dpmsolver") == ("dpmsolver", 25)
    assert GenerateRequest(sampler="ddpm", seed=0).build_request().options.steps == 1000
    ddim = GenerateRequest(sampler="ddim", seed=0).build_request().options
    assert (ddim.sampler, ddim.steps) == ("ddim", SAMPLING_DEFAULTS["mambo"].steps["ddim"])
    given = AnomalyMapParams(steps=7, seed=0).build_request().options
    assert (given.sampler, given.steps) == ("ddpm", 7)
    with pytest.raises(BadInputError, match="job kind"):
        default_sampling("segment")
