"""`reconciler validate` on bad input: each case asserts the exit code, file:line and message.

One table, one row per thing that can be wrong, so adding a rule means adding a row.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main

FN = """\
apiVersion: reconciler.genesys.cloud/v1
kind: FunctionDefinition
metadata:
  name: func-a
spec:
  name: lookup
  description: Looks things up.
  timeoutMillis: 1000
  parameters:
    type: object
    properties:
      q: {type: string}
    required: [q]
"""
POLICY = """\
apiVersion: reconciler.genesys.cloud/v1
kind: ContextPolicy
metadata:
  name: policy-a
spec:
  modelId: genesys-llm-v4
  tokenLimits: {hardLimit: 8000, softLimit: 4000}
  retention: {autoCompactThreshold: 0.5, evictionPolicy: lru}
  piiMasking:
    - {name: email, pattern: '[a-z]+@[a-z]+', replacement: '[EMAIL]'}
  attributeMappings:
    - {source: crm.tier, attribute: customerTier, dataType: string}
"""
PROMPT = """\
apiVersion: reconciler.genesys.cloud/v1
kind: Prompt
metadata:
  name: helper
spec:
  version: 1.0.0
  modelId: genesys-llm-v4
  maxTokens: 500
  template: "Hello {{ name }}{% for m in messages %} {{ m.text }}{% endfor %}"
  variables:
    - {name: name, required: true}
    - {name: messages, type: array}
  contextRules:
    - {source: conversation_history, maxTokens: 100}
  functions: [func-a]
  contextPolicy: policy-a
"""


def fn(old: str, new: str) -> dict[str, str]:
    assert old in FN, old
    return {"fn.yaml": FN.replace(old, new), "policy.yaml": POLICY, "prompt.yaml": PROMPT}


def policy(old: str, new: str) -> dict[str, str]:
    assert old in POLICY, old
    return {"fn.yaml": FN, "policy.yaml": POLICY.replace(old, new), "prompt.yaml": PROMPT}


def prompt(old: str, new: str) -> dict[str, str]:
    assert old in PROMPT, old
    return {"fn.yaml": FN, "policy.yaml": POLICY, "prompt.yaml": PROMPT.replace(old, new)}


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(7)
)

# (id, files, expected "file:line", expected message fragment)
CASES: list[tuple[str, dict[str, str], str, str]] = [
    (
        "duplicate key",
        fn("  timeoutMillis: 1000\n", "  timeoutMillis: 1000\n  timeoutMillis: 2000\n"),
        "fn.yaml:9",
        "duplicate key 'timeoutMillis'",
    ),
    (
        "unknown field with hint",
        fn("timeoutMillis", "timeoutMilis"),
        "fn.yaml:8",
        "did you mean 'timeoutMillis'",
    ),
    (
        "unknown top-level field",
        fn("kind: FunctionDefinition", "kind: FunctionDefinition\nstatus: {}"),
        "fn.yaml:3",
        "unknown field 'status'",
    ),
    (
        "unknown kind",
        fn("kind: FunctionDefinition", "kind: Function"),
        "fn.yaml:2",
        "unknown kind 'Function'",
    ),
    (
        "unknown apiVersion",
        fn("reconciler.genesys.cloud/v1", "reconciler.genesys.cloud/v2"),
        "fn.yaml:1",
        "unknown apiVersion",
    ),
    (
        "missing required field",
        fn("  description: Looks things up.\n", ""),
        "fn.yaml:6",
        "required field is missing",
    ),
    ("wrong type", fn("timeoutMillis: 1000", "timeoutMillis: soon"), "fn.yaml:8", "valid integer"),
    ("tab indentation", fn("  name: lookup", "\tname: lookup"), "fn.yaml:6", "YAML syntax"),
    ("syntax error", fn("required: [q]", "required: [q"), "fn.yaml:", "YAML syntax"),
    (
        "timeout too large",
        fn("timeoutMillis: 1000", "timeoutMillis: 60001"),
        "fn.yaml:8",
        "between 1 and 60000",
    ),
    ("timeout zero", fn("timeoutMillis: 1000", "timeoutMillis: 0"), "fn.yaml:8", "between 1 and 60000"),
    ("bad function id", fn("name: func-a", "name: Func_A"), "fn.yaml:4", "not a valid function id"),
    (
        "parameters not object",
        fn("    type: object\n    properties:", "    type: array\n    properties:"),
        "fn.yaml:10",
        "of type object",
    ),
    ("invalid JSON schema", fn("q: {type: string}", "q: {type: 12}"), "fn.yaml:", "not a valid JSON Schema"),
    ("disallowed property type", fn("q: {type: string}", "q: {type: 'null'}"), "fn.yaml:12", "allowed:"),
    (
        "required names missing property",
        fn("required: [q]", "required: [q, z]"),
        "fn.yaml:13",
        "'z' is not a declared property",
    ),
    (
        "top-level enum",
        fn("    required: [q]", "    required: [q]\n    enum: [1]"),
        "fn.yaml:14",
        "cannot be an enum",
    ),
    (
        "too many properties",
        fn(
            "      q: {type: string}",
            "\n".join(f"      p{i}: {{type: string}}" for i in range(11)) + "\n      q: {type: string}",
        ),
        "fn.yaml:12",
        "at most 10 parameters",
    ),
    (
        "nesting too deep",
        fn(
            "      q: {type: string}",
            "      q:\n        type: object\n        properties:\n"
            "          r:\n            type: object\n            properties:\n"
            "              s: {type: object, properties: {}}",
        ),
        "fn.yaml:18",
        "nest 4 levels deep",
    ),
    ("bad semver", prompt("version: 1.0.0", "version: v1"), "prompt.yaml:6", "not a semantic version"),
    (
        "undeclared template variable",
        prompt("Hello {{ name }}", "Hello {{ nom }}"),
        "prompt.yaml:9",
        "does not declare 'nom'",
    ),
    ("required variable unused", prompt("Hello {{ name }}", "Hello"), "prompt.yaml:11", "'name' is not used"),
    ("template syntax error", prompt("{% endfor %}", ""), "prompt.yaml:", "template syntax error"),
    ("token budget", prompt("maxTokens: 500", "maxTokens: 110"), "prompt.yaml:9", "token budget exceeded"),
    (
        "variant weights",
        prompt(
            "  contextPolicy: policy-a",
            "  contextPolicy: policy-a\n  variants:\n"
            "    - {name: a, template: 'Hi {{ name }}', weight: 60}\n"
            "    - {name: b, template: 'Yo {{ name }}', weight: 30}",
        ),
        "prompt.yaml:18",
        "sum to 100",
    ),
    (
        "duplicate variant names",
        prompt(
            "  contextPolicy: policy-a",
            "  contextPolicy: policy-a\n  variants:\n"
            "    - {name: a, template: 'Hi {{ name }}', weight: 50}\n"
            "    - {name: a, template: 'Yo {{ name }}', weight: 50}",
        ),
        "prompt.yaml:19",
        "used twice",
    ),
    (
        "variant over budget",
        prompt(
            "  contextPolicy: policy-a",
            "  contextPolicy: policy-a\n  variants:\n"
            "    - {name: a, template: '" + "x" * 2000 + " {{ name }}', weight: 100}",
        ),
        "prompt.yaml:18",
        "token budget exceeded",
    ),
    (
        "missing function reference",
        prompt("functions: [func-a]", "functions: [func-zz]"),
        "prompt.yaml:15",
        "'func-zz', which is not defined",
    ),
    (
        "missing policy reference",
        prompt("contextPolicy: policy-a", "contextPolicy: policy-zz"),
        "prompt.yaml:16",
        "'policy-zz', which is not defined",
    ),
    (
        "bad context rule source",
        prompt("source: conversation_history", "source: crm"),
        "prompt.yaml:14",
        "must be one of",
    ),
    (
        "soft above hard",
        policy("softLimit: 4000", "softLimit: 9000"),
        "policy.yaml:7",
        "must be below hardLimit",
    ),
    (
        "soft limit and ratio",
        policy("softLimit: 4000", "softLimit: 4000, softLimitRatio: 0.5"),
        "policy.yaml:7",
        "not both",
    ),
    ("ratio out of range", policy("softLimit: 4000", "softLimitRatio: 1.5"), "policy.yaml:7", "less than 1"),
    (
        "compact threshold",
        policy("autoCompactThreshold: 0.5", "autoCompactThreshold: 1.5"),
        "policy.yaml:8",
        "(0, 1]",
    ),
    (
        "eviction policy",
        policy("evictionPolicy: lru", "evictionPolicy: random"),
        "policy.yaml:8",
        "must be one of",
    ),
    ("pattern does not compile", policy("'[a-z]+@[a-z]+'", "'[a-z+@'"), "policy.yaml:10", "does not compile"),
    ("catastrophic pattern", policy("'[a-z]+@[a-z]+'", "'(a+)+@'"), "policy.yaml:10", "exponential time"),
    ("attribute data type", policy("dataType: string", "dataType: text"), "policy.yaml:12", "must be one of"),
    (
        "duplicate identity across files",
        {"fn.yaml": FN, "fn2.yaml": FN, "policy.yaml": POLICY, "prompt.yaml": PROMPT},
        "fn2.yaml:1",
        "defined twice (first at",
    ),
    ("not a mapping", {"list.yaml": "- a\n- b\n"}, "list.yaml:1", "must be a mapping"),
    ("alias bomb", {"bomb.yaml": BOMB}, "bomb.yaml:", "more than"),
    (
        "comma in a flow mapping",
        fn("q: {type: string}", "q: {type: string, description: Code, e.g. EUR}"),
        "fn.yaml:12",
        "unknown JSON Schema keyword 'e.g. EUR' (a comma inside",
    ),
    (
        "misspelt schema keyword",
        fn("q: {type: string}", "q: {type: number, maximu: 5}"),
        "fn.yaml:12",
        "unknown JSON Schema keyword 'maximu' (did you mean 'maximum'?)",
    ),
    (
        "null schema keyword",
        fn("q: {type: string}", "q: {type: number, minimum: null}"),
        "fn.yaml:12",
        "null",
    ),
    # About 500 levels once gave a RecursionError traceback and 30,000 (60 KB) a segfault.
    ("nested 500 deep", {"deep.yaml": "a: " + "[" * 500 + "]" * 500 + "\n"}, "deep.yaml:1:67", "64 levels"),
    (
        "nested 30,000 deep",
        {"deep.yaml": "a: " + "[" * 30_000 + "]" * 30_000 + "\n"},
        "deep.yaml:1",
        "64 levels",
    ),
    (
        "nested deep in block style",
        {"deep.yaml": "".join("  " * i + f"k{i}:\n" for i in range(80)) + "  " * 80 + "leaf: 1\n"},
        "deep.yaml:65",
        "64 levels",
    ),
    ("alias before its anchor", {"alias.yaml": "a: *nowhere\n"}, "alias.yaml:1:4", "no anchor"),
    ("mapping as a key", {"key.yaml": "? [a, b]\n: 1\nc: 2\n"}, "key.yaml:1:3", "keys must be strings"),
    ("merge key", {"merge.yaml": "base: &b {x: 1}\nother:\n  <<: *b\n"}, "merge.yaml:3", "merge keys"),
    (
        "non-UTF-8 bytes",
        {"latin.yaml": "apiVersion: reconciler.genesys.cloud/v1\nkind: caf\xe9\n"},
        "latin.yaml:2",
        "not UTF-8",
    ),
    (
        "undefined variable in a template block, on its own line",
        prompt(
            'template: "Hello {{ name }}{% for m in messages %} {{ m.text }}{% endfor %}"',
            "template: |\n    Hello {{ name }}\n"
            "    {% for m in messages %} {{ m.text }}{% endfor %}\n    Ask ${nowhere}.",
        ),
        "prompt.yaml:12",
        "undefined variable ${nowhere}",
    ),
    (
        "unclosed variable",
        fn("description: Looks things up.", "description: Looks ${team up."),
        "fn.yaml:7",
        "${team is not closed",
    ),
    (
        "undefined variable",
        fn("description: Looks things up.", "description: ${nowhere}"),
        "fn.yaml:7",
        "undefined variable ${nowhere}",
    ),
    ("empty name", fn("name: func-a", "name: ''"), "fn.yaml:4", "at least 1 character"),
    ("file too large", {"big.yaml": "# " + "x" * (1024 * 1024 + 1) + "\n"}, "big.yaml:1", "the limit is"),
]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        data = text.encode("latin-1") if name == "latin.yaml" else text.encode()
        (root / name).write_bytes(data)


@pytest.mark.parametrize(("files", "where", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_reported_with_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], where: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifests").mkdir()
    write(tmp_path / "manifests", files)
    result = CliRunner().invoke(main, ["validate", "manifests"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("manifests/")]
    assert any(line.startswith(f"manifests/{where}") and message in line for line in lines), result.output


def test_all_problems_are_reported_in_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    write(
        tmp_path / "m",
        {
            **fn("timeoutMillis: 1000", "timeoutMillis: 0"),
            "prompt.yaml": PROMPT.replace("version: 1.0.0", "version: one"),
            "junk.yaml": "kind: Nope\n",
        },
    )
    result = CliRunner().invoke(main, ["validate", "m"])
    assert result.exit_code == 1
    assert (
        "fn.yaml:8" in result.output and "prompt.yaml:6" in result.output and "junk.yaml:1" in result.output
    )


def test_github_format_prints_annotations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    write(tmp_path / "m", fn("timeoutMillis: 1000", "timeoutMillis: 0"))
    result = CliRunner().invoke(main, ["validate", "m", "--format", "github"])
    assert result.exit_code == 1
    assert "::error file=m/fn.yaml,line=8,col=" in result.stdout


def test_secrets_in_the_project_file_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    write(tmp_path / "m", {"fn.yaml": FN})
    (tmp_path / "reconciler.yaml").write_text(
        textwrap.dedent("""\
        environments:
          prod:
            region: us-east-1
            credentials: {clientSecret: hunter2}
    """)
    )
    result = CliRunner().invoke(main, ["validate", "m"])
    assert result.exit_code == 1
    assert "reconciler.yaml:4:" in result.output and "environment variable" in result.output
    assert "hunter2" not in result.output


def test_the_examples_are_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    result = CliRunner().invoke(main, ["validate", str(repo / "manifests")])
    assert result.exit_code == 0, result.output


def test_schemas_are_fresh() -> None:
    from reconciler.schemas import schema_files

    repo = Path(__file__).resolve().parents[2]
    for name, text in schema_files().items():
        assert (repo / "schemas" / name).read_text() == text, f"schemas/{name} is stale: run make schemas"


def test_an_invalid_function_is_not_also_undefined_in_every_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One mistake, one problem: the prompt referencing a broken function is not told it is
    undefined (with and without the cache, which remembers which documents did not load)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifests").mkdir()
    write(tmp_path / "manifests", fn("timeoutMillis: 1000", 'timeoutMillis: "abc"'))
    for _ in range(2):  # the second run answers from the cache
        result = CliRunner().invoke(main, ["validate", "manifests"], catch_exceptions=False)
        assert result.exit_code == 1
        assert "timeoutMillis" in result.output and "not defined" not in result.output, result.output
