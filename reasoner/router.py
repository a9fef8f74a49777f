"""Routes a free-text request (`reasoner ask`) to a plan and its input, both picked by the LM.

Not to be confused with `Plan.planner`, which adds a plan's steps for one input.

Two constrained questions, both built from the plan registry rather than
written by hand: first, which plan (the model's reply is constrained to a
JSON object whose `plan` is one of the registered names); then, that plan's
input (constrained to the input model's JSON schema). The prompt shows each
plan's description and its own examples. Every answer is validated by
pydantic; a rejected one is asked again, with the validation error, up to
`attempts` times. The model's reply is data: it is parsed as JSON, never run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, create_model

from reasoner._exceptions import InputError, PlanningError
from reasoner.plan import Plan, format_validation_error


class Route(BaseModel):
    """Where the request goes, shown before anything runs."""

    plan: str
    input: dict[str, Any]
    asked: int  # model calls it took


def _summary(plan: Plan) -> str:
    first = plan.description.split("\n\n")[0].replace("\n", " ").strip()
    return first.removeprefix(f"{plan.name}:").strip()


def plan_prompt(request: str, plans: Mapping[str, Plan],
                  examples: Sequence[tuple[str, str]] | None = None) -> str:
    """The plans' descriptions, then (request, plan name) examples, then the request."""
    if examples is None:
        examples = [(text, name) for name, plan in plans.items() for text, _ in plan.examples]
    lines = ["Pick the plan that fulfils the request. Plans:"]
    for name, plan in plans.items():
        lines.append(f"- {name}: {_summary(plan)}")
    lines.append("Examples:")
    for text, name in examples:
        lines.append(f'Request: {text}\nAnswer: {{"plan": "{name}"}}')
    lines.append(f"Request: {request}\nAnswer:")
    return "\n".join(lines)


async def shortlist(embedder: Any, request: str, plans: Mapping[str, Plan],
                    keep: int = 2) -> tuple[dict[str, Plan], list[tuple[str, str]]]:
    """The `keep` plans whose examples are most like the request, and their examples
    ordered by likeness, the most alike last.

    A 135M-parameter model cannot weigh four plan descriptions, and leans on the
    examples nearest the question; retrieval with the sentence embedder narrows
    the choice (and the schema) to the likeliest plans and puts the most
    relevant examples there.
    """
    examples = [(text, name) for name, plan in plans.items() for text, _ in plan.examples]
    vectors = await embedder.embed([request] + [text for text, _ in examples])  # (1 + n, d)
    likeness = vectors[1:] @ vectors[0]  # (n,)
    best: dict[str, float] = {}
    for (_, name), score in zip(examples, likeness, strict=True):
        best[name] = max(best.get(name, -1.0), float(score))
    kept = sorted(best, key=best.__getitem__, reverse=True)[:keep]
    ordered = sorted(range(len(examples)), key=lambda i: likeness[i])
    return ({name: plans[name] for name in plans if name in kept},
            [examples[i] for i in ordered if examples[i][1] in kept])


def input_prompt(request: str, plan: Plan) -> str:
    fields = []
    for name, field in plan.input.model_fields.items():
        described = f" ({field.description})" if field.description else ""
        fields.append(f"- {name}{described}")
    examples = "\n".join(f"Request: {text}\nInput: {json.dumps(value)}"
                         for text, value in plan.examples)
    return (f"Fill the input of the plan '{plan.name}' for the request, as JSON.\n"
            f"Fields:\n" + "\n".join(fields) + f"\nExamples:\n{examples}\n"
            f"Request: {request}\nInput:")


async def _ask(lm: Any, prompt: str, schema: type[BaseModel], seed: int, attempts: int,
               what: str) -> tuple[BaseModel, int]:
    problem = ""
    for attempt in range(1, attempts + 1):
        question = prompt if not problem else f"{prompt}\n(Your last answer was rejected: {problem})"
        try:
            generation = await lm.generate(question, schema=schema, max_new_tokens=96,
                                           temperature=0.0 if attempt == 1 else 0.7,
                                           seed=seed + attempt)
            return schema.model_validate_json(generation.text), attempt
        except ValidationError as exc:
            problem = format_validation_error(exc)
    raise PlanningError(f"no valid {what} after {attempts} attempts; last problem: {problem}")


async def route(
    lm: Any, request: str, plans: Mapping[str, Plan], *, embedder: Any = None, seed: int = 0,
    attempts: int = 3,
) -> Route:
    """Ask the model for a plan and its input; validated, re-asked on failure.

    With an `embedder`, the model chooses among the plans the embedder finds
    likeliest (`shortlist`), with the most relevant examples nearest the request.
    """
    if not request.strip():
        raise InputError("the request is empty")
    if not plans:
        raise PlanningError("there are no plans to choose from")
    candidates, examples = plans, None
    if embedder is not None and len(plans) > 2:
        candidates, examples = await shortlist(embedder, request, plans)
    picker = create_model(  # the schema admits the candidates' names only
        "PlanChoice", plan=(Literal[tuple(candidates)], ...))  # type: ignore[valid-type]
    prompt = plan_prompt(request, candidates, examples)
    picked, asked = await _ask(lm, prompt, picker, seed, attempts, "plan")
    plan = plans[picked.plan]  # type: ignore[attr-defined]
    task, more = await _ask(lm, input_prompt(request, plan), plan.input, seed + 100, attempts,
                            f"input for {plan.name}")
    return Route(plan=plan.name, input=task.model_dump(mode="json"), asked=asked + more)
