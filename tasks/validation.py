"""Inbound data checked against its model, with problems said the same way everywhere."""

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from temporal_executor.tasks.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any) -> M:
    """`data` as `model`, or `InvalidRequest` listing what is wrong with it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(validation_problems(exc)) from None


def validation_problems(exc: ValidationError) -> str:
    """`field: what is wrong` for each problem, as dead letters and HTTP errors report them."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}" for err in exc.errors()
    )
