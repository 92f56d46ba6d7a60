"""Templates on their own: what a template sees, what it read, and how a failure reads (no etcd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from projector import templates
from projector.templates import RenderFailed as RenderError
from projector.templates import Templates

VALUES = {
    "db/url": b"postgres://db",
    "db/pool": b"5",
    "hba/a": b"host a",
    "hba/b": b"host b",
    "blob": b"\xff\x00",
    "conf.json": b'{"port": 80}',
    "secret": b"hunter2",
}


def rendered(tmp_path: Path, text: str, values: dict[str, bytes] = VALUES) -> str:
    (tmp_path / "t.j2").write_text(text)
    return Templates([(tmp_path / "t.j2", "out")]).render(values, 7, None)["out"].decode()


def test_what_a_template_sees(tmp_path: Path) -> None:
    assert (
        rendered(tmp_path, "{{ keys['db/url'] }} {{ get('nope', 'x') }} {{ revision }}")
        == "postgres://db x 7"
    )
    assert (
        rendered(tmp_path, "{{ ls('') | join(',') }}|{{ ls('hba') | join(',') }}")
        == "blob,conf.json,db,hba,secret|a,b"
    )
    assert rendered(tmp_path, "{{ tree('db') | dictsort }}") == "[('pool', '5'), ('url', 'postgres://db')]"
    assert (
        rendered(tmp_path, "{{ from_json(keys['conf.json']).port }} {{ to_json({'a': 1}) }}") == '80 {"a": 1}'
    )
    assert rendered(tmp_path, "{{ b64decode('aGk=') }} {{ keys['blob'] is string }}") == "hi False"


def test_a_change_renders_only_the_templates_whose_inputs_it_touches(tmp_path: Path) -> None:
    sources = {
        "url": "{{ keys['db/url'] }}",
        "hba": "{% for t in ls('hba') %}{{ t }}{% endfor %}",
        "all": "{{ keys | length }}",
    }
    for name, text in sources.items():
        (tmp_path / f"{name}.j2").write_text(text)
    rendering = Templates([(tmp_path / f"{name}.j2", name) for name in sources])
    assert set(rendering.render(VALUES, 1, None)) == {"url", "hba", "all"} and rendering.renders == 3
    assert set(rendering.render(VALUES, 2, ["db/pool"])) == {"all"}
    assert set(rendering.render(VALUES, 3, ["hba/c"])) == {"hba", "all"}
    assert set(rendering.render(VALUES, 4, ["db/url"])) == {"url", "all"}


def test_a_failure_names_the_template_its_line_and_the_revision_never_a_value(tmp_path: Path) -> None:
    with pytest.raises(
        RenderError, match=r"t.j2 \(line 2\) failed at revision 7: UndefinedError: no key at 'missing'"
    ):
        rendered(tmp_path, "{{ keys['secret'] }}\n{{ keys['missing'] }}\n")
    with pytest.raises(RenderError) as failed:
        rendered(tmp_path, "{{ from_json(keys['secret']) }}")
    assert "JSONDecodeError" in str(failed.value) and "hunter2" not in str(failed.value)
    with pytest.raises(RenderError) as failed:
        rendered(
            tmp_path, "{{ keys['secret'] + 1 }}"
        )  # any other error: its kind alone, as its text may quote
    assert str(failed.value).endswith("failed at revision 7: TypeError")


def test_the_sandbox_keeps_templates_away_from_python(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="SecurityError"):
        rendered(tmp_path, "{{ keys.__class__.__mro__ }}")


def test_an_output_over_the_limit_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "MAX_OUTPUT", 10)
    with pytest.raises(RenderError, match="more than 10"):
        rendered(tmp_path, "{{ keys['db/url'] }}")
