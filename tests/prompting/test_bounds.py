"""Previews cannot be weaponised: the PR author is untrusted, and `render`, `plan --format
markdown` and `validate` run their templates and patterns. Each hostile input fails fast with a
clear error naming the prompt. The time bounds are hang guards, far above what a pass takes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.errors import RenderError
from reconciler.models import ContextPolicy, ContextPolicySpec, Prompt
from reconciler.prompting import build_prompt, preview, render_template
from reconciler.rules import MAX_RANGE, check_pattern, template_bounds
from tests.conftest import Org, write_project
from tests.prompting.conftest import make_conversation, make_policy, make_prompt, message

HANG_GUARD = 10.0  # seconds

# (template, what the error says); variables come from `n` (attribute-like, not a literal) so the
# static checks cannot see them and the sandbox must stop them while rendering.
HOSTILE = [
    ('{{ "x" * 300000000 }}', "would repeat a value to 300,000,000 items or characters"),
    ('{{ "x" * n * n }}', "would repeat a value to 100,000,000"),
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "range() of 100,000",
    ),
    ("{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}", "100,000 loop iterations"),
    ("{{ 9 ** 9999999 }}", "9 ** 9999999 makes a number of ~39,999,996 bits"),
    ("{{ 9 ** (n * 1000) }}", "9 ** 10000000 makes a number"),
    ('{{ "x"|center(300000000) }}', "filter center was given a width or count of 300,000,000"),
    ('{{ "x".ljust(n * 30000) }}', "width or count of 300,000,000"),
    ('{{ "{:>999999999}".format(1) }}', "asks for a field of 999,999,999 characters"),
    ('{{ "%999999999d" % 1 }}', "asks for a field of 999,999,999 characters"),
    (
        '{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}',
        "the operator ~ would make 1,048,576 characters",
    ),
    (
        '{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}',
        "would make 1,048,576 items or characters",
    ),
    (
        "{% macro d(k) %}{% if k %}{{ d(k - 1) }}{{ d(k - 1) }}{% else %}x{% endif %}{% endmacro %}"
        "{{ d(40) }}",
        "100,000 loop iterations and calls",
    ),
    ('{% for i in range(n) %}{{ "y" * 9999 }}{% endfor %}', "produced more than 1,000,000 characters"),
    ('{{ ("x" * 999999).replace("x", "yy") }}', "would make 1,999,998 characters"),
    ('{{ ("a\n" * 400000)|indent(n) }}', "would make"),
]


@pytest.mark.parametrize(("template", "says"), HOSTILE, ids=[t[:40] for t, _ in HOSTILE])
def test_a_hostile_template_fails_fast_with_a_clear_error(template: str, says: str) -> None:
    start = time.monotonic()
    with pytest.raises(RenderError) as caught:
        render_template(template, {"n": 10_000}, "evil")
    assert time.monotonic() - start < HANG_GUARD
    message = str(caught.value)
    assert message.startswith("prompt 'evil': the template "), message
    assert says in message, message
    assert "previews allow 1,000,000 characters of output" in message


def test_the_wall_clock_budget_stops_a_slow_render() -> None:
    # Each step is legal; together they run past a (tiny, for the test) budget.
    template = "{% for i in range(n) %}{{ i|string|length }}{% endfor %}"
    with pytest.raises(RenderError, match=r"prompt 'slow': the template ran longer than"):
        render_template(template, {"n": 10_000}, "slow", seconds=0.0)


def test_ordinary_templates_are_untouched_by_the_bounds() -> None:
    template = (
        "Hello {{ name|upper }} {% for m in msgs %}{{ loop.index }}:{{ m ~ '!' }} {% endfor %}"
        "{{ 2 ** 10 }} {{ '%5.2f' % 3.14159 }} {{ '{:>5}'.format('a') }} {{ msgs|join(', ') }}"
        " {{ 'a-b'.replace('-', '+') }} {{ range(3)|list }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }}"
    )
    out = render_template(template, {"name": "dana", "msgs": ["a", "b"]})
    assert out == "Hello DANA 1:a! 2:b! 1024  3.14     a a, b a+b [0, 1, 2] ababab [1, 2, 3]"
    big = render_template("{% for i in range(n) %}{{ i }},{% endfor %}", {"n": MAX_RANGE})
    assert big.count(",") == MAX_RANGE


def test_mutating_values_is_refused_by_the_immutable_sandbox() -> None:
    with pytest.raises(RenderError, match="prompt 'p': template cannot be rendered"):
        render_template("{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}", {}, "p")


def test_validate_catches_what_the_source_shows() -> None:
    assert template_bounds("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    assert template_bounds("{{ 9 ** 9999999 }}") == [
        "line 1: 9 ** 9999999 is a number of ~39,999,996 bits; previews allow 4,096"
    ]
    assert template_bounds('{{ "x" * 300000000 }}')[0].endswith("previews allow 1,000,000")
    assert template_bounds("{{ range(10)|list }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ x * 9999999 }}") == []


def _write(tmp_path: Path, template: str, pattern: str = "[a-z]+@[a-z]+") -> Path:
    return write_project(
        tmp_path,
        f"""\
        apiVersion: reconciler.genesys.cloud/v1
        kind: ContextPolicy
        metadata: {{name: pol}}
        spec:
          modelId: genesys-llm-v4
          tokenLimits: {{hardLimit: 4000}}
          piiMasking: [{{name: p, pattern: '{pattern}'}}]
        ---
        apiVersion: reconciler.genesys.cloud/v1
        kind: Prompt
        metadata: {{name: evil}}
        spec:
          version: 1.0.0
          modelId: genesys-llm-v4
          maxTokens: 4000
          template: '{template}'
          variables: [{{name: n, type: number, defaultValue: 10000}}]
          contextPolicy: pol
        """,
    )


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{{{{ 9 ** 9999999 }}}}", "9 ** 9999999 is a number of ~39,999,996 bits"),
        ("{{% for i in range(100000) %}}{{{{ n }}}}{{% endfor %}}", "range() of 100,000 items"),
        ('{{{{ "x" * 300000000 }}}}', "repeating a literal makes 300,000,000"),
    ],
)
def test_validate_refuses_literal_bombs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str, says: str
) -> None:
    root = _write(tmp_path, template.replace("'", "''").replace("{{", "{").replace("}}", "}"))
    monkeypatch.chdir(root)
    start = time.monotonic()
    result = CliRunner().invoke(main, ["validate"])
    assert time.monotonic() - start < HANG_GUARD
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "spec.template: template would exceed a preview limit" in result.output and says in result.output


def test_render_and_the_pr_preview_stop_a_bomb_validate_cannot_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _write(tmp_path, "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}")
    (root / "conv.json").write_text('{"id": "c", "messages": []}')
    monkeypatch.chdir(root)
    for name in ("RECONCILER_ENV", "GENESYS_BASE_URL", "GENESYS_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert CliRunner().invoke(main, ["validate"]).exit_code == 0  # n is not a literal
    start = time.monotonic()
    result = CliRunner().invoke(main, ["render", "evil", "--conversation", "conv.json"])
    assert time.monotonic() - start < HANG_GUARD
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "prompt 'evil': the template made more than 100,000 loop iterations and calls" in result.output
    prompt = Prompt.model_validate(
        {
            "apiVersion": "reconciler.genesys.cloud/v1",
            "kind": "Prompt",
            "metadata": {"name": "evil"},
            "spec": make_prompt(
                "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}",
                variables=[{"name": "n", "type": "number", "defaultValue": 10000}],
            ).model_dump(by_alias=True),
        }
    )
    start = time.monotonic()
    text = preview(None, prompt, None, make_conversation())
    assert time.monotonic() - start < HANG_GUARD
    assert text.startswith("(preview unavailable: prompt 'evil': the template made more than 100,000")


# --- regex -------------------------------------------------------------------------------------

REDOS = ["(a|a)*$", r"\w*\w*\w*\w*\w*@", "(.*a){12}$", "(a+)+@"]


@pytest.mark.parametrize("pattern", REDOS)
def test_validate_refuses_patterns_that_backtrack(pattern: str) -> None:
    why = check_pattern(pattern)
    assert "a backtracking engine can take exponential time (or high polynomial time) on it" in why


@pytest.mark.parametrize(
    ("pattern", "says"),
    [(r"(a)\1", "invalid escape sequence"), ("(?=a)b", "invalid perl operator"), ("[a-z+@", "missing ]")],
)
def test_validate_refuses_what_re2_cannot_compile(pattern: str, says: str) -> None:
    assert check_pattern(pattern).startswith(
        "does not compile on the linear-time regex engine (RE2) masking runs on: "
    )
    assert says in check_pattern(pattern)


def test_common_pii_patterns_pass() -> None:
    for pattern in (r"[\w.+-]+@[\w-]+\.[\w.]+", r"\b(?:\d[ -]?){13,16}\b", r"\+?\d[\d ()-]{7,14}\d"):
        assert check_pattern(pattern) == "", pattern


@pytest.mark.parametrize("pattern", [*REDOS, r"(a)\1", "(?<=a)b"])
def test_the_emulator_refuses_them_too(org: Org, pattern: str) -> None:
    body = {
        "id": "pol-x",
        "model_id": "genesys-llm-v4",
        "token_limit_matrix": {"hard_limit": 4000},
        "pii_masking": [{"name": "p", "pattern": pattern, "replacement": "[X]"}],
    }
    response = org.api("PUT", "/api/v2/ai/llm/context-policies/pol-x", body)
    assert response.status_code == 400, response.text
    assert [d["fieldName"] for d in response.json()["details"]] == ["pii_masking[0].pattern"]


@pytest.mark.parametrize("pattern", REDOS)
def test_masking_runs_in_linear_time_whatever_the_pattern(pattern: str) -> None:
    # The model does not check patterns (validate does): build one past validate, as a
    # hand-edited live policy could be, and mask a message built to make backtracking explode.
    policy = ContextPolicySpec.model_validate(
        make_policy().model_dump(by_alias=True, exclude_none=True)
        | {"piiMasking": [{"name": "evil", "pattern": pattern, "replacement": "[X]"}]}
    )
    hostile = "a" * 5000 + "!" + "b" * 20
    conversation = make_conversation([message("customer", hostile, 1)])
    start = time.monotonic()
    rendered = build_prompt(make_prompt(), policy, conversation)
    assert time.monotonic() - start < HANG_GUARD
    assert rendered.text.startswith("customer: ")


def test_a_pattern_re2_cannot_run_is_a_render_error() -> None:
    policy = make_policy(piiMasking=[{"name": "backref", "pattern": r"(a)\1"}])
    with pytest.raises(RenderError, match="piiMasking rule 'backref': pattern does not compile on RE2"):
        build_prompt(make_prompt(), policy, make_conversation())


def test_a_policy_manifest_with_a_redos_pattern_never_reaches_the_renderer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _write(tmp_path, "Hi", pattern="(a|a)*$")
    (root / "conv.json").write_text('{"id": "c", "messages": []}')
    monkeypatch.chdir(root)
    result = CliRunner().invoke(main, ["render", "evil", "--conversation", "conv.json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "repeats alternatives that can match the same text" in result.output
    assert isinstance(ContextPolicy, type)
