"""Read a policy file. The only module of the package that touches files or yaml, so
the model and the evaluator stay importable inside the workflow sandbox."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from policies.model import Policy

DEFAULT_POLICY = Path(__file__).with_name("default.yaml")


class PolicyError(ValueError):
    """A policy file that cannot be used. The message names the file, the field and
    what is wrong with it, one problem a line."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {p}" for p in problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping: plain YAML keeps the
    last silently, so a pasted `acknowledge:` would override the first unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_policy(path: str | Path = DEFAULT_POLICY) -> Policy:
    """Load and validate a YAML policy file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(path, [f"cannot read the file ({e.strerror or e})"]) from e
    return parse_policy(text, path)


def parse_policy(text: str, path: str | Path = "<policy>") -> Policy:
    """A policy from YAML text (e.g. uploaded to the console); `path` names it in errors."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise PolicyError(path, [f"not valid YAML: {e}"]) from e
    if not isinstance(data, dict):
        raise PolicyError(path, ["the file must hold a mapping (version, clauses, ...)"])
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(path, _problems(e)) from e


def _problems(error: ValidationError) -> list[str]:
    """Pydantic's errors as 'field: problem' lines people can act on."""
    out: list[str] = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]).replace(".[key]", " (as a key)")
        if err["type"] == "extra_forbidden":
            parent, _, key = loc.rpartition(".")
            where = parent or "top level"
            out.append(f"{loc}: unknown key {key!r} in {where}")
        elif err["type"] == "missing":
            out.append(f"{loc}: required field is missing")
        elif err["type"] == "value_error" and not loc:
            # Cross-field checks already say 'field: problem', several joined by '; '.
            out.extend(err["msg"].removeprefix("Value error, ").split("; "))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{loc or 'top level'}: {msg} (got {err.get('input')!r})"
                       if err["type"] != "value_error" else f"{loc}: {msg}")
    return out
