"""Request models built from the bundle's signature, so the API documents and checks the real
input fields (pydantic.create_model): types, nullability, allowed values, ranges.

Values are made coherent the way `cleaning.make_coherent` does for batch rows: text is
stripped, an empty string means missing, and a category's other spellings ("fiber optic")
map to its declared one ("Fiber optic").
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from lifecycle.cleaning import spelling_key

MAX_RECORDS = 1000  # records in one /predict request


def signature_fields(signature: dict | list) -> list[dict]:
    """The signature's input fields as a list of {name, type, nullable, allowed, min, max}."""
    fields = signature
    if isinstance(signature, dict):
        fields = next((signature[k] for k in ("inputs", "fields", "columns") if k in signature),
                      signature)
    if isinstance(fields, dict):
        fields = [{"name": name, **spec} for name, spec in fields.items()]
    return [dict(f) for f in fields]


def _tidy(value: Any) -> Any:
    """Strip and collapse whitespace; an empty string is missing (as in cleaning)."""
    if isinstance(value, str):
        value = " ".join(value.split())
        return value or None
    return value


def _tidy_keep_blank(value: Any) -> Any:
    """`_tidy` for a required field: a blank text stays "" so the error says what is wrong."""
    return " ".join(value.split()) if isinstance(value, str) else value


def _canonical(allowed: list[str]):
    canonical = {spelling_key(a): a for a in allowed}

    def fix(value: Any) -> Any:
        value = _tidy(value)
        if isinstance(value, str):
            return canonical.get(spelling_key(value), value)
        return value

    return fix


def _annotation(field: dict, strict_categories: bool):
    """The pydantic type of one signature field, with its constraints and coherence fix.

    Categories outside `allowed` are only refused when the bundle refuses them
    (signature `unknown_category: reject`); by default the encoder ignores them."""
    kind = field.get("type", "string")
    number = int if kind == "int" else float
    bounds = {k: number(field[m]) for k, m in (("ge", "min"), ("le", "max"))
              if field.get(m) is not None}
    fix = _tidy
    if kind == "category" and field.get("allowed") and strict_categories:
        allowed = [str(a) for a in field["allowed"]]
        core, fix = Literal[tuple(allowed)], _canonical(allowed)
    elif kind == "int":
        core = Annotated[int, Field(**bounds)]
    elif kind == "float":
        core = Annotated[float, Field(allow_inf_nan=False, **bounds)]
    elif kind == "bool":
        core = bool
    elif kind == "datetime":
        core = dt.datetime
    else:  # text: blank is missing, so a required text field needs a non-blank value
        core = Annotated[str, Field(min_length=1, max_length=10_000)]
    if field.get("nullable", False):
        core = core | None
    elif fix is _tidy:
        fix = _tidy_keep_blank
    return Annotated[core, BeforeValidator(fix)]


def record_model(signature: dict | list, id_column: str | None = None,
                 name: str = "Record") -> type[BaseModel]:
    """The pydantic model of one input record. `id_column` (the contract's id) is accepted as
    an optional extra field when the signature lacks it: canary and A/B route by it."""
    definitions: dict[str, Any] = {}
    strict = isinstance(signature, dict) and signature.get("unknown_category") == "reject"
    for field in signature_fields(signature):
        annotation = _annotation(field, strict)
        description = field.get("description") or f"{field.get('type', 'string')}" + (
            f", one of {field['allowed']}" if field.get("allowed") else "") + (
            "; the customer's id: keeps a customer on one variant (canary, A/B), masked in "
            "the inference registry" if field.get("role") == "id" else "")
        if field.get("nullable", False):
            definitions[field["name"]] = (annotation, Field(default=None,
                                                            description=description))
        else:
            definitions[field["name"]] = (annotation, Field(description=description))
    if id_column and id_column not in definitions:
        definitions[id_column] = (str | None, Field(
            default=None, max_length=200,
            description="the customer's id: keeps a customer on one variant (canary, A/B); "
                        "masked in the inference registry"))
    example = signature.get("example") if isinstance(signature, dict) else None
    config = ConfigDict(extra="forbid",
                        json_schema_extra={"examples": [example]} if example else None)
    return create_model(name, __config__=config, **definitions)


class RecordParser:
    """Validate a JSON body that is one record or a list of records, with errors located
    the way FastAPI locates them (`body`, index, field)."""

    def __init__(self, model: type[BaseModel], max_records: int = MAX_RECORDS):
        self.model = model
        self.one = TypeAdapter(model)
        self.many = TypeAdapter(Annotated[list[model], Field(min_length=1,
                                                             max_length=max_records)])

    def parse(self, body: Any) -> tuple[list[dict], bool]:
        """(records as plain dicts, whether the body was a list). Raises RequestInvalid."""
        if isinstance(body, list):
            try:
                items = self.many.validate_python(body)
            except ValidationError as exc:
                raise RequestInvalid(_errors(exc)) from None
            return [item.__dict__ for item in items], True
        if isinstance(body, dict):
            try:
                item = self.one.validate_python(body)
            except ValidationError as exc:
                raise RequestInvalid(_errors(exc)) from None
            return [item.__dict__], False
        raise RequestInvalid([{"loc": ["body"], "type": "model_type",
                               "msg": "expected a JSON object (one record) or a list of them"}])


class RequestInvalid(Exception):
    def __init__(self, errors: list[dict]):
        super().__init__(errors)
        self.errors = errors


def _errors(exc: ValidationError) -> list[dict]:
    """One entry per bad field: where, what, and the offending value."""
    out = []
    for error in exc.errors(include_url=False, include_context=False):
        entry = {"loc": ["body", *error["loc"]], "type": error["type"], "msg": error["msg"]}
        if error["type"] != "missing":
            entry["input"] = _short(error.get("input"))
        out.append(entry)
    return out


def _short(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
    return type(value).__name__
