"""Every error code has one named exception class, made once."""

from __future__ import annotations

import builtins
import inspect

import pytest

from object_model import errors
from object_model.errors import (
    ErrorCode,
    ModelError,
    NotAdmittedError,
    RequestTimeoutError,
    error_class,
    from_exception,
)
from object_model.messages import ErrorReport, error_report


def named_classes() -> list[type[ModelError]]:
    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, ModelError) and cls is not ModelError]


def test_every_code_has_exactly_one_named_class() -> None:
    by_code: dict[ErrorCode, list[str]] = {}
    for cls in named_classes():
        by_code.setdefault(cls.code, []).append(cls.__name__)
    assert set(by_code) == set(ErrorCode), set(ErrorCode) - set(by_code)
    assert all(len(names) == 1 for names in by_code.values()), by_code


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_class_is_the_same_named_class_every_time(code: ErrorCode) -> None:
    cls = error_class(code)
    assert cls is error_class(code)
    assert cls.code is code and cls.__module__ == errors.__name__
    assert cls.__name__.endswith("Error") and not hasattr(builtins, cls.__name__)


def test_a_timeout_can_be_caught_by_class_and_is_not_the_builtin() -> None:
    assert error_class(ErrorCode.TIMEOUT) is RequestTimeoutError
    assert not issubclass(RequestTimeoutError, TimeoutError)
    with pytest.raises(RequestTimeoutError):
        raise ErrorReport(code=ErrorCode.TIMEOUT, text="no answer").to_exception()


def test_a_report_comes_back_as_the_class_that_made_it() -> None:
    sent = NotAdmittedError("join first", path="stations/cs-1", details={"site": "a"})
    back = error_report(sent).to_exception()
    assert type(back) is NotAdmittedError
    assert (back.text, back.path, back.details) == ("join first", "stations/cs-1", {"site": "a"})


def test_anything_else_becomes_an_internal_error_keeping_its_text() -> None:
    converted = from_exception(KeyError("boom"))
    assert converted.code is ErrorCode.INTERNAL_ERROR and "KeyError" in converted.text
