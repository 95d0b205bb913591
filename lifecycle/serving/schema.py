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
    create_model,
)

from lifecycle.cleaning import spelling_key
from lifecycle.serving.inputs import MAX_LENGTH, max_length

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
    elif kind == "category":
        core = Annotated[str, Field(max_length=max_length(field))]
    elif kind == "int":
        core = Annotated[int, Field(strict=True, **bounds)]  # a boolean is not a number
    elif kind == "float":
        core = Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]
    elif kind == "bool":
        core = bool
    elif kind == "datetime":
        core = dt.datetime
    else:  # text: blank is missing, so a required text field needs a non-blank value
        core = Annotated[str, Field(min_length=1, max_length=max_length(field))]
    if field.get("nullable", False):
        core = core | None
    elif fix is _tidy:
        fix = _tidy_keep_blank
    return Annotated[core, BeforeValidator(fix)]


def record_model(signature: dict | list, id_column: str | None = None,
                 name: str = "Record", carried: dict | None = None,
                 masked: frozenset = frozenset()) -> type[BaseModel]:
    """The pydantic model of one input record, for the OpenAPI schema. `id_column` (the
    contract's id) is an optional field when the signature lacks it: canary and A/B route by
    it. `carried`: the contract's other declared columns (name -> ColumnSpec), accepted and
    never used as features; `masked`: those the registry keeps masked (personal data)."""
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
    for column, spec in (carried or {}).items():
        if column in definitions:
            continue
        kind = {"int": int, "float": float, "bool": bool}.get(spec.type, str)
        bounds = {"max_length": MAX_LENGTH.get(spec.type, 1000)} if kind is str else {}
        definitions[column] = (kind | None, Field(
            default=None, **bounds, description=f"{spec.type}: carried with the record, never "
            "a feature" + ("; masked in the inference registry"
                          if spec.role == "metadata" or column in masked else "")))
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
    """The shape of a /predict body: one record (a JSON object) or a list of 1..max_records.

    The values are not judged here: the serving core's input check does that for every
    transport (`inputs.InputCheck`), so the API refuses exactly what batch scoring refuses.
    The pydantic model (`record_model`) documents the records in the OpenAPI schema."""

    def __init__(self, model: type[BaseModel] | None = None, max_records: int = MAX_RECORDS):
        self.model = model
        self.max_records = max_records

    def parse(self, body: Any) -> tuple[list[dict], bool]:
        """(records, whether the body was a list). Raises RequestInvalid."""
        if isinstance(body, dict):
            return [body], False
        if isinstance(body, list):
            if not 1 <= len(body) <= self.max_records:
                raise RequestInvalid([{"loc": ["body"], "type": "too_long" if body else
                                       "too_short",
                                       "msg": f"send 1 to {self.max_records} records, "
                                              f"not {len(body)}"}])
            wrong = [i for i, item in enumerate(body) if not isinstance(item, dict)]
            if wrong:
                raise RequestInvalid([{"loc": ["body", i], "type": "model_type",
                                       "msg": "a record is a JSON object"} for i in wrong[:20]])
            return body, True
        raise RequestInvalid([{"loc": ["body"], "type": "model_type",
                               "msg": "expected a JSON object (one record) or a list of them"}])


class RequestInvalid(Exception):
    def __init__(self, errors: list[dict]):
        super().__init__(errors)
        self.errors = errors
