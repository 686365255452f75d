from models.errors import ALL_ERRORS, BadInputError, MammogenError


def test_every_error_has_one_status_and_one_exit_code():
    for err in ALL_ERRORS:
        assert 400 <= err.http_status < 600
        assert err.exit_code > 0
        assert err.code
    codes = {(e.code) for e in ALL_ERRORS}
    assert len(codes) == len(ALL_ERRORS), "error codes must be distinct"


def test_error_serialises_with_its_message():
    e = BadInputError("image is empty")
    assert isinstance(e, MammogenError)
    assert e.to_dict() == {"error": "bad_input", "detail": "image is empty"}
