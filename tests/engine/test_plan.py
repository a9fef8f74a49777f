"""Plan building and validation: every mistake is a PlanError naming step and parameter."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from reasoner import Plan, PlanError, checks


class Task(BaseModel):
    text: str


class Draft(BaseModel):
    text: str


class Score(BaseModel):
    value: float


def test_dependencies_read_off_the_signature() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text=task.text)

    @plan.step
    async def score(ctx, draft: Draft, task: Task) -> Score:
        return Score(value=1.0)

    compiled = plan.compile()
    assert set(compiled.graph.nodes) == {"draft", "score"}
    assert list(compiled.graph.edges(data="param")) == [("draft", "score", "draft")]
    assert compiled.producers == {"draft": (), "score": ("draft",)}
    assert compiled.dependants == {"draft": ("score",), "score": ()}
    assert [(b.param, b.source) for b in compiled.bindings["score"]] == [
        ("draft", "step"),
        ("task", "input"),
    ]
    assert score.takes_ctx and not draft.takes_ctx


def test_type_mismatch_names_step_parameter_and_fix() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text="")

    with pytest.raises(PlanError) as err:

        @plan.step
        async def score(draft: Score) -> Score:
            return Score(value=0)

    message = str(err.value)
    assert "'score'" in message and "'draft'" in message
    assert "expects Score" in message and "returns Draft" in message and "annotate it Draft" in message


def test_unknown_step_is_reported_with_a_suggestion() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text="")

    @plan.step
    async def score(drfat: Draft) -> Score:
        return Score(value=0)

    with pytest.raises(PlanError, match=r"step 'score': parameter 'drfat' names no step.*'draft'"):
        plan.compile()


def test_duplicate_step_name() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text="")

    async def other(task: Task) -> Draft:
        return Draft(text="")

    with pytest.raises(PlanError, match="duplicate step name 'draft'"):
        plan.add_step(other, name="draft")


def test_cycle_is_reported_as_a_path() -> None:
    plan = Plan("p", input=Task)

    async def a(b: Draft) -> Draft:
        return b

    async def b(a: Draft) -> Draft:
        return a

    plan.add_step(a)
    plan.add_step(b)
    with pytest.raises(PlanError, match=r"cycle: b -> a -> b$"):  # b feeds a, a feeds b
        plan.compile()


def test_missing_annotations() -> None:
    plan = Plan("p", input=Task)
    with pytest.raises(PlanError, match="parameter 'task' has no type annotation"):

        @plan.step
        async def untyped(task) -> Draft:  # noqa: ANN001
            return Draft(text="")

    with pytest.raises(PlanError, match="return annotation must be a pydantic model"):

        @plan.step
        async def no_return(task: Task):  # noqa: ANN202
            return Draft(text="")


def test_non_model_input_and_bad_options() -> None:
    with pytest.raises(PlanError, match="input must be a pydantic model"):
        Plan("p", input=dict)  # type: ignore[arg-type]
    plan = Plan("p", input=Task)
    with pytest.raises(PlanError, match="retries must be >= 0"):

        @plan.step(retries=-1)
        async def draft(task: Task) -> Draft:
            return Draft(text="")


def test_check_parameters_are_validated() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text="")

    @draft.check
    def fine(task: Task, out: Draft) -> checks.Result:
        return checks.Result.ok()

    with pytest.raises(PlanError, match="check 'bad' of step 'draft': parameter 'nope'"):

        @draft.check
        def bad(nope: Draft) -> checks.Result:
            return checks.Result.ok()

    assert [c.name for c in draft.checks] == ["fine"]


class Many(BaseModel):
    n: int


def test_planner_sizes_the_graph_by_the_input() -> None:
    plan = Plan("sized", input=Many)

    @plan.step
    async def start(task: Many) -> Draft:
        return Draft(text="0")

    async def grow(previous: Draft) -> Draft:
        return previous

    async def collect(parts: list[Draft]) -> Score:
        return Score(value=len(parts))

    @plan.planner
    def size(p: Plan, task: Many) -> None:
        names = []
        for i in range(task.n):
            names.append(f"grow_{i}")
            p.add_step(grow, name=names[-1], inputs={"previous": names[-2] if i else "start"})
        p.add_step(collect, inputs={"parts": names})

    three = plan.compile(Many(n=3))
    assert sorted(three.graph.nodes) == ["collect", "grow_0", "grow_1", "grow_2", "start"]
    assert three.producers["collect"] == ("grow_0", "grow_1", "grow_2")
    assert list(plan.steps) == ["start"]  # the builder is untouched
    assert len(plan.compile(Many(n=5)).steps) == 7
    assert list(plan.compile().steps) == ["start"]  # without an input: the static graph


def test_a_compiled_plan_is_immutable_and_cached_until_the_builder_changes() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text="")

    compiled = plan.compile()
    assert plan.compile() is compiled
    with pytest.raises(TypeError):
        compiled.steps["other"] = compiled.steps["draft"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        compiled.name = "q"  # type: ignore[misc]

    @plan.template
    async def grow(payload: Draft) -> Draft:
        return payload

    again = plan.compile()
    assert again is not compiled and list(again.templates) == ["grow"]
    assert list(compiled.templates) == []  # what was compiled before stays as it was
    with pytest.raises(PlanError, match="duplicate step name 'grow'"):
        plan.add_step(grow.fn, name="grow")  # steps and templates share one namespace


def test_list_binding_needs_a_list_annotation() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text="")

    async def collect(parts: Draft) -> Score:
        return Score(value=0)

    with pytest.raises(PlanError, match=r"annotate it list\[Model\]"):
        plan.add_step(collect, inputs={"parts": ["draft"]})


def test_graph_renders_as_mermaid_and_dot() -> None:
    plan = Plan("p", input=Task)

    @plan.step
    async def draft(task: Task) -> Draft:
        return Draft(text="")

    @plan.step
    async def score(draft: Draft) -> Score:
        return Score(value=0)

    mermaid = plan.mermaid()
    assert mermaid.startswith("flowchart TD") and "draft -->|draft| score" in mermaid
    dot = plan.dot()
    assert dot.startswith('digraph "p"') and '"draft" -> "score"' in dot


def test_with_options_copies_the_plan_with_one_step_changed() -> None:
    plan = Plan("opts", input=Task)

    @plan.step(retries=2)
    async def first(task: Task) -> Draft:
        return Draft(text=task.text)

    @first.check
    def not_empty(out: Draft) -> bool:
        return bool(out.text)

    voted = plan.with_options("first", samples=4, select="vote", vote=lambda out: out.text)
    assert voted.steps["first"].options.samples == 4 and voted.steps["first"].options.retries == 2
    assert [c.name for c in voted.steps["first"].checks] == ["not_empty"]
    assert plan.steps["first"].options.samples == 1  # the original is untouched
    assert voted.name == plan.name and voted.compile().producers == plan.compile().producers
    with pytest.raises(PlanError, match="has no step 'second'"):
        plan.with_options("second", samples=2)
    with pytest.raises(PlanError, match="step 'first': .*'sample'"):
        plan.with_options("first", sample=2)
    with pytest.raises(PlanError, match="samples must be an integer"):
        plan.with_options("first", samples=0)
