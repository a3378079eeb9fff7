"""Typed parameter models: parsed and range-checked once, then carried as objects.

Every parameter class (one per processing step, plus the per-run bundle of them) is a frozen
pydantic model that refuses unknown names. Built directly (``TrackingParams(max_gap=2)``), a
bad value raises :class:`~pyama_lib.core.errors.ParamsError` naming the class, the field and what
is allowed. Used as a Prefect flow parameter, the same model gives the dashboard's "Run" form
its named fields, defaults and limits.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pyama_lib.core.errors import ParamsError

Problem = tuple[tuple[str, ...], str]  # (location, what is wrong there)


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """What a pydantic ``ValidationError`` raised for ``model`` says, one entry per field.

    An unknown name is answered with the names allowed where it stands; a nested model's own
    :class:`ParamsError` is expanded into its problems, under the nested field's name.
    """
    problems: list[Problem] = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        nested = getattr(error.get("ctx", {}).get("error"), "problems", None)
        if nested:
            problems.extend((loc + sub, text) for sub, text in nested)
        elif error["type"] == "extra_forbidden":
            allowed = ", ".join(_fields_at(model, loc[:-1]))
            problems.append((loc, f"unknown parameter; allowed: {allowed}"))
        else:
            message = error["msg"].removeprefix("Value error, ")
            given = f"; given: {error['input']!r}" if loc else ""
            problems.append((loc, message + given))
    return problems


def describe_problems(problems: list[Problem], where: str = "") -> str:
    """``"tracking.max_gap: Input should be a valid integer (got 1.5)"``, joined by ``; ``."""
    return "; ".join(
        f"{'.'.join(part for part in (where, *loc) if part)}: {text}" for loc, text in problems
    )


def _fields_at(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    # Walk nested models down to the one holding the unknown name.
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def params_error(exc: ValidationError, model: type[BaseModel], where: str) -> ParamsError:
    """The :class:`ParamsError` for ``exc``; it keeps the problems for an enclosing model."""
    problems = validation_problems(exc, model)
    error = ParamsError(describe_problems(problems, where))
    error.problems = problems  # type: ignore[attr-defined]
    return error


class Params(BaseModel):
    """Base of the parameter models: frozen, unknown names refused, errors as ParamsError."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise params_error(exc, type(self), type(self).__name__) from None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe dict (for completion markers and run records)."""
        return self.model_dump(mode="json")


def _odd(value: int) -> int:
    if value % 2 == 0:
        raise ValueError("must be odd")
    return value


#: A square's side in pixels: an odd integer >= 1, so the square has a centre pixel.
OddSize = Annotated[int, Field(ge=1, strict=True), AfterValidator(_odd)]
