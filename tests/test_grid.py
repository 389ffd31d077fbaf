"""Grid expansion and every class of validation error."""

from __future__ import annotations

import pytest

from kdrun.errors import UserError
from kdrun.grid import expand, load
from tests.helpers import tiny_grid, write_grid


def test_expansion_counts_and_dependencies():
    name, specs = expand(tiny_grid(methods=["vanilla", "kd", {"kd": {"T": [2, 8]}}]))
    assert name == "tiny"
    teachers = [s for s in specs if s.kind == "teacher"]
    students = [s for s in specs if s.kind == "student"]
    assert len(teachers) == 1 and teachers[0].student == "resnet14"
    # vanilla x 2 seeds, kd (default T) x 2, kd T=2 x 2, kd T=8 x 2
    assert len(students) == 8
    temps = sorted(s.config["method"]["params"]["T"] for s in students if s.method == "kd")
    assert temps == [2.0, 2.0, 4.0, 4.0, 8.0, 8.0]
    for s in students:
        if s.method == "vanilla":
            assert s.depends_on is None and s.config["teacher"] is None
        else:
            assert s.depends_on == teachers[0].hash
    assert len({s.hash for s in specs}) == len(specs)


def test_defaults_are_resolved_into_config():
    _, specs = expand(tiny_grid())
    kd = next(s for s in specs if s.method == "kd")
    assert kd.config["method"]["params"] == {"T": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    assert kd.config["recipe"]["momentum"] == 0.9  # recipe key left out -> documented default
    assert kd.config["dataset"]["noise"] == 1.0


def test_vanilla_student_shared_between_teachers():
    g = tiny_grid(
        teachers={"resnet14": {"train": True}, "resnet20": {"train": True}},
        pairs=[
            {"teacher": "resnet14", "student": "resnet8"},
            {"teacher": "resnet20", "student": "resnet8"},
        ],
    )
    _, specs = expand(g)
    assert sum(s.method == "vanilla" and s.kind == "student" for s in specs) == 2  # 2 seeds, once


def test_pair_recipe_override_and_list_field_is_not_a_sweep():
    g = tiny_grid(pairs=[{"teacher": "resnet14", "student": "resnet8", "recipe": {"lr": 0.01}}])
    _, specs = expand(g)
    students = [s for s in specs if s.kind == "student"]
    assert {s.config["recipe"]["lr"] for s in students} == {0.01}
    assert all(s.config["recipe"]["lr_milestones"] == [1] for s in students)
    g = tiny_grid(
        methods=["vanilla"],
        pairs=[
            {"teacher": "resnet14", "student": "resnet8", "recipe": {"lr_milestones": [[1], [2]]}}
        ],
    )
    _, specs = expand(g)
    assert sorted(
        str(s.config["recipe"]["lr_milestones"]) for s in specs if s.kind == "student"
    ) == ["[1]", "[1]", "[2]", "[2]"]


def test_hash_is_stable_and_config_sensitive():
    _, a = expand(tiny_grid())
    _, b = expand(tiny_grid())
    assert [s.hash for s in a] == [s.hash for s in b]
    _, c = expand(tiny_grid(seeds=[0, 2]))
    assert {s.hash for s in a} != {s.hash for s in c}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g: g.update(bogus=1), "unknown key 'bogus'; valid keys: name, dataset"),
        (lambda g: g.pop("pairs"), "missing required key 'pairs'"),
        (lambda g: g.update(dataset={"name": "mnist"}), "unknown dataset 'mnist'; valid datasets:"),
        (
            lambda g: g["dataset"].update(num_classes="x"),
            "dataset.num_classes: expected an integer",
        ),
        (lambda g: g["recipe"].update(lr="fast"), "recipe.lr: expected a number"),
        (lambda g: g["recipe"].update(epochs=2, lr_milestones=[5]), "lr_milestones must lie in"),
        (
            lambda g: g["recipe"].update(warmup=3),
            "recipe: unknown key 'warmup'; valid keys: epochs",
        ),
        (
            lambda g: g.update(teachers={"resnet99": {"train": True}}),
            "teachers.resnet99: unknown architecture 'resnet99' for synthetic; valid: MobileNetV2",
        ),
        (lambda g: g.update(teachers={"resnet14": {}}), "give exactly one of 'train: true'"),
        (
            lambda g: g.update(teachers={"resnet14": {"checkpoint": "/nope.pth"}}),
            "teachers.resnet14.checkpoint: file /nope.pth not found",
        ),
        (
            lambda g: g["pairs"][0].update(student="resnet9"),
            "pairs[0].student: unknown architecture",
        ),
        (
            lambda g: g["pairs"][0].update(teacher="wrn_40_2"),
            "pairs[0].teacher: 'wrn_40_2' is not declared under 'teachers'; declared: resnet14",
        ),
        (lambda g: g["pairs"][0].update(color="red"), "pairs[0]: unknown key 'color'"),
        (
            lambda g: g.update(methods=["kd", "magic"]),
            "methods[1]: unknown method 'magic'; valid methods:",
        ),
        (
            lambda g: g.update(methods=[{"kd": {"tau": 3}}]),
            "unknown key 'tau'; valid keys: T, ce_weight",
        ),
        (lambda g: g.update(methods=[{"kd": {"T": "hot"}}]), "kd.T: expected a number"),
        (
            lambda g: g.update(methods=["cakd"]),  # default top_k=5 on a 4-class dataset
            # a top-level method's value is reported where it was written, not at a pair
            "\nmethods.cakd.top_k: 5 must be between 1 and 3 (the dataset has 4 classes)",
        ),
        (
            lambda g: g.update(methods=[{"cakd+ls+rkkd": {"cakd": {"top_k": 4}}}]),
            "\nmethods.cakd+ls+rkkd.cakd.top_k: 4 must be between 1 and 3",
        ),
        (lambda g: g.update(methods=[]), "methods: expected a non-empty list"),
        (lambda g: g.update(seeds=["a"]), "seeds: expected a list of integers"),
    ],
)
def test_validation_errors_name_path_and_choices(mutate, message):
    g = tiny_grid()
    mutate(g)
    with pytest.raises(UserError) as e:
        expand(g)
    assert message.lstrip("\n") in str(e.value)
    if message.startswith("\n"):  # the message starts with it: no other key path before
        assert str(e.value).startswith(message[1:])
    assert "\n" not in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndataset: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d+ invalid YAML"):
        load(p)
    write_grid(p, tiny_grid(methods=["nope"]))
    with pytest.raises(UserError, match=r"bad.yaml: methods\[0\]: unknown method 'nope'"):
        load(p)
    with pytest.raises(UserError, match="missing.yaml not found; shipped grids: .*quickstart.yaml"):
        load(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load(p)


def test_shipped_grid_resolves_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, specs = load("grids/quickstart.yaml")
    assert name == "quickstart" and specs


def test_class_count_checks_accept_what_fits():
    ok = expand(tiny_grid(methods=[{"cakd": {"top_k": 3}}, {"cakd": {"strong_set": "label"}}]))
    assert {s.config["method"]["params"]["top_k"] for s in ok[1] if s.kind == "student"} == {3, 5}
