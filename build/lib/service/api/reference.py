"""Render the API reference (docs/api.md) from the app's own OpenAPI document.

Run `python -m service.api.reference > docs/api.md`; a test checks the file is current.
"""

from __future__ import annotations

from typing import Any

from service.api.app import create_app


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " or ".join(repr(v) for v in schema["enum"])
    if schema.get("type") == "array":
        return f"list[{_type(schema.get('items', {}))}]"
    return schema.get("type", "any")


def render(spec: dict[str, Any]) -> str:
    lines = [f"# {spec['info']['title']} API reference", "",
             "Generated from the OpenAPI document (`/openapi.json`, browsable at `/docs`). Every request "
             "under `/v1` needs `Authorization: Bearer <key>`; errors are RFC 9457 `application/problem+json`.", ""]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            lines.append(f"## `{method.upper()} {path}`")
            lines.append("")
            if op.get("description") or op.get("summary"):
                lines += [(op.get("description") or op.get("summary")).strip(), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | type | required |", "| --- | --- | --- | --- |"]
                lines += [f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | {p.get('required', False)} |"
                          for p in params]
                lines.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                lines += [f"Request body: `{_type(body)}`", ""]
            lines += ["| status | meaning | body |", "| --- | --- | --- |"]
            for code, response in op["responses"].items():
                content = response.get("content", {})
                kinds = ", ".join(f"{media} `{_type(c.get('schema', {}))}`" if c.get("schema") else media
                                  for media, c in content.items())
                lines.append(f"| {code} | {response.get('description', '')} | {kinds} |")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, schema in spec["components"]["schemas"].items():
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [schema["description"].strip(), ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            lines += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
            lines += [f"| `{k}` | {_type(v)} | {k in required} | {v.get('description', '')} |"
                      for k, v in props.items()]
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(create_app().openapi()), end="")
