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
