"""Validation of the workflow config and of dataset metadata against JSON Schemas.

Defaults declared in a schema are filled in, so that `config/config.yaml` only
needs the keys a user wants to change. Errors name the key path and the reason.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _fill_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _fill_defaults(jsonschema.Draft202012Validator)


def key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate(data: dict[str, Any], schema: dict[str, Any], source: str) -> dict[str, Any]:
    """Return a copy of `data` with defaults filled in; raise ConfigError naming the key."""
    data = copy.deepcopy(data) if data is not None else {}
    # Defaults are filled while validating; a defaulted object gets its own defaults too.
    errors = sorted(_Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        lines = []
        for err in errors:
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                extra = sorted(set(err.instance) - set(allowed))
                where = key_path(err)
                for key in extra:
                    full = key if where == "(top level)" else f"{where}.{key}"
                    lines.append(f"unknown key '{full}' (allowed here: {', '.join(allowed)})")
            else:
                lines.append(f"key '{key_path(err)}': {err.message}")
        raise ConfigError(f"{source}: " + "; ".join(lines))
    return data


def validate_config(config: dict[str, Any], schema_path: str | Path,
                    source: str = "config") -> dict[str, Any]:
    return validate(config, load_schema(schema_path), source)


def validate_metadata(data: dict[str, Any], kind: str, source: str) -> dict[str, Any]:
    """Validate a review.yaml or trial.yaml mapping against the package's schema."""
    return validate(data, load_schema(SCHEMA_DIR / f"{kind}.schema.yaml"), source)


def dataset_identity(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What every report and the index say about a dataset: name, title, source, label."""
    return {
        "name": name,
        "title": meta.get("title", name),
        "citation": meta.get("citation", ""),
        "licence": meta.get("licence", ""),
        "synthetic": bool(meta["synthetic"]),
        "generator": meta.get("generator"),
    }
