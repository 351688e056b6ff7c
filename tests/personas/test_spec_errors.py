"""Every kind of bad spec fails at load time with a SpecError naming the field and the problem."""

from __future__ import annotations

import textwrap

import pytest

from crowdlab.personas import SpecError, parse_spec, sample


def spec_yaml(attributes: str) -> str:
    return "name: t\nattributes:\n" + textwrap.indent(textwrap.dedent(attributes), "  ")


def fails(text: str, *fragments: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_unknown_distribution_kind() -> None:
    err = fails(spec_yaml("- {name: age, kind: gamma, shape: 2}\n"), "attributes[0] (age).kind", "unknown distribution kind 'gamma'")
    assert err.line == 3


def test_unknown_kind_inside_conditional_case() -> None:
    fails(
        spec_yaml(
            """
            - {name: sex, kind: categorical, values: [m, f]}
            - name: height
              kind: conditional
              on: sex
              cases:
                m: {kind: weibull, a: 1}
                f: {kind: normal, mean: 165, std: 7}
            """
        ),
        "attributes[1] (height).cases[m].kind",
        "unknown distribution kind 'weibull'",
    )


def test_negative_weights() -> None:
    fails(spec_yaml("- {name: x, kind: categorical, weights: {a: 1, b: -2}}\n"), "attributes[0] (x).weights", "non-negative")


def test_all_zero_weights() -> None:
    fails(spec_yaml("- {name: x, kind: categorical, weights: {a: 0, b: 0}}\n"), "attributes[0] (x).weights", "all zero")


def test_percentages_that_do_not_add_up_say_by_how_much() -> None:
    fails(spec_yaml("- {name: x, kind: categorical, percentages: {a: 50, b: 45}}\n"), "attributes[0] (x).percentages", "95", "5 short of 100")
    fails(spec_yaml("- {name: x, kind: categorical, percentages: {a: 60, b: 45}}\n"), "5 over 100")


def test_quota_counts_that_cannot_sum_to_n() -> None:
    spec = parse_spec(spec_yaml("- {name: x, kind: categorical, counts: {a: 3, b: 4}}\n"))
    assert sample(spec, 7, seed=1).num_rows == 7
    with pytest.raises(SpecError, match=r"attributes\[0\] \(x\)\.counts: counts sum to 7 but n = 10"):
        sample(spec, 10, seed=1)


def test_conditional_on_unknown_attribute() -> None:
    fails(
        spec_yaml("- {name: job, kind: conditional, on: schooling, default: {kind: categorical, values: [a]}}\n"),
        "attributes[0] (job).on",
        "no attribute named 'schooling'",
    )


def test_conditional_on_later_attribute_is_refused() -> None:
    # job depends on education and education on job: a cycle, reported at the forward reference
    err = fails(
        spec_yaml(
            """
            - {name: job, kind: conditional, on: education, default: {kind: categorical, values: [a, b]}}
            - {name: education, kind: conditional, on: job, default: {kind: categorical, values: [x]}}
            """
        ),
        "attributes[0] (job).on",
        "defined later",
    )
    assert err.line == 4


def test_conditional_on_itself() -> None:
    fails(spec_yaml("- {name: job, kind: conditional, on: job, default: {kind: categorical, values: [a]}}\n"), "refers to itself")


def test_conditional_case_for_value_parent_never_takes() -> None:
    fails(
        spec_yaml(
            """
            - {name: sex, kind: categorical, values: [m, f]}
            - name: h
              kind: conditional
              on: sex
              cases: {x: {kind: uniform, low: 0, high: 1}, m: {kind: uniform, low: 0, high: 1}}
              default: {kind: uniform, low: 0, high: 1}
            """
        ),
        "attributes[1] (h).cases[x]",
        "never takes the value 'x'",
    )


def test_conditional_missing_case_without_default() -> None:
    fails(
        spec_yaml(
            """
            - {name: sex, kind: categorical, values: [m, f]}
            - {name: h, kind: conditional, on: sex, cases: {m: {kind: uniform, low: 0, high: 1}}}
            """
        ),
        "attributes[1] (h).cases",
        "no case for sex = ['f']",
    )


def test_bounds_low_above_high() -> None:
    err = fails(spec_yaml("- {name: age, kind: uniform, low: 70, high: 18}\n"), "attributes[0] (age).low", "low (70) > high (18)")
    assert err.line == 3
    fails(spec_yaml("- {name: age, kind: normal, mean: 40, std: 10, low: 90, high: 20}\n"), "low (90) > high (20)")


def test_bounds_inside_a_conditional_case_name_the_case() -> None:
    fails(
        spec_yaml(
            """
            - {name: sex, kind: categorical, values: [m, f]}
            - name: h
              kind: conditional
              on: sex
              cases:
                m: {kind: normal, mean: 175, std: 7, low: 200, high: 150}
              default: {kind: normal, mean: 165, std: 7}
            """
        ),
        "attributes[1] (h).cases[m].low",
        "low (200) > high (150)",
    )


def test_non_positive_std() -> None:
    fails(spec_yaml("- {name: age, kind: normal, mean: 40, std: 0}\n"), "attributes[0] (age).std", "greater than 0")


def test_unknown_locale_literal() -> None:
    fails(spec_yaml("- {name: n, kind: identity, field: name, locale: xx_YY}\n"), "attributes[0] (n).locale", "unknown locale 'xx_YY'")


def test_unknown_locale_among_attribute_values() -> None:
    fails(
        spec_yaml(
            """
            - {name: locale, kind: categorical, values: [de_DE, klingon]}
            - {name: n, kind: identity, field: name, locale: locale}
            """
        ),
        "attributes[1] (n).locale",
        "['klingon']",
    )


@pytest.mark.parametrize("n", [0, -5])
def test_non_positive_n(n: int) -> None:
    spec = parse_spec(spec_yaml("- {name: x, kind: categorical, values: [a]}\n"))
    with pytest.raises(SpecError, match=r"^n: must be a positive integer"):
        sample(spec, n, seed=1)


def test_negative_seed() -> None:
    spec = parse_spec(spec_yaml("- {name: x, kind: categorical, values: [a]}\n"))
    with pytest.raises(SpecError, match="seed"):
        sample(spec, 3, seed=-1)


def test_malformed_yaml_gives_line_number() -> None:
    text = "name: t\nattributes:\n  - name: x\n    kind: categorical\n    values: [a, b\n  - name: y\n"
    err = fails(text, "malformed YAML")
    assert err.line is not None and err.line >= 5


def test_template_referencing_unknown_attribute() -> None:
    fails(
        spec_yaml(
            """
            - {name: age, kind: uniform, low: 18, high: 90, integer: true}
            - {name: description, kind: template, template: "{name} is {age}"}
            """
        ),
        "attributes[1] (description).template",
        "no attribute named 'name'",
    )


def test_template_bad_format_spec() -> None:
    fails(
        spec_yaml(
            """
            - {name: age, kind: uniform, low: 18, high: 90, integer: true}
            - {name: description, kind: template, template: "{age:q}"}
            """
        ),
        "attributes[1] (description).template",
        "bad format",
    )


def test_unknown_field_is_named() -> None:
    fails(spec_yaml("- {name: x, kind: categorical, values: [a], weigths: {a: 1}}\n"), "attributes[0] (x).weigths", "unknown field")


def test_duplicate_and_reserved_names() -> None:
    fails(spec_yaml("- {name: x, kind: categorical, values: [a]}\n- {name: x, kind: categorical, values: [b]}\n"), "defined twice")
    fails(spec_yaml("- {name: agent_id, kind: categorical, values: [a]}\n"), "reserved")


def test_two_sources_of_shares_refused() -> None:
    fails(spec_yaml("- {name: x, kind: categorical, values: [a], weights: {a: 1}}\n"), "attributes[0] (x)", "exactly one of")


def test_quota_inside_conditional_refused() -> None:
    fails(
        spec_yaml(
            """
            - {name: sex, kind: categorical, values: [m, f]}
            - {name: j, kind: conditional, on: sex, default: {kind: categorical, values: [a, b], sampling: quota}}
            """
        ),
        "attributes[1] (j).default.sampling",
        "quota",
    )


def test_not_a_mapping() -> None:
    fails("- just\n- a list\n", "spec", "mapping")


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


DUPLICATED = """\
name: t
attributes:
  - {name: age, kind: uniform, low: 18, high: 80}
  - name: sex
    kind: categorical
    percentages: {male: 50, female: 50, male: 40}
attributes:
  - {name: height, kind: normal, mean: 170, std: 10}
"""


def test_a_key_given_twice_names_the_mapping_the_key_and_the_line() -> None:
    # a second `attributes:` list used to replace the first without a word
    err = fails(DUPLICATED.replace(", male: 40", ""), "spec: duplicate key 'attributes' (line 7)")
    assert err.field == "spec" and err.line == 7
    err = fails(DUPLICATED, "attributes[1] (sex).percentages: duplicate key 'male' (line 6)")
    nested = spec_yaml("- name: age\n  kind: normal\n  mean: 40\n  std: 5\n  std: 9\n")
    fails(nested, "attributes[0] (age): duplicate key 'std' (line 7)")
    # keys compare as YAML reads them; a merge key may be overridden, as YAML intends
    fails(spec_yaml("- {name: n, kind: categorical, weights: {1: 1, 01: 2}}\n"), "duplicate key '1'")
    merged = "name: t\nbase: &b {kind: uniform, low: 0, high: 1}\n"
    with pytest.raises(SpecError, match="base: unknown field"):  # not a duplicate error
        parse_spec(merged + "attributes:\n  - {<<: *b, name: x, high: 2}\n")


def test_cli_refuses_a_duplicate_key_with_exit_code_2(tmp_path) -> None:
    from typer.testing import CliRunner

    from crowdlab.flows.cli import app

    path = tmp_path / "dup.yaml"
    path.write_text(DUPLICATED.replace(", male: 40", ""))
    result = CliRunner().invoke(app, ["personas", "sample", str(path), "-n", "10", "-o", str(tmp_path / "p.parquet")])
    assert result.exit_code == 2
    assert "error: spec: duplicate key 'attributes' (line 7)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "p.parquet").exists()
