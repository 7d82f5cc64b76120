"""Reading reward code without running it: which reward functions it defines and how to call each.

Everything here works on the syntax tree only, so it is safe in the trainer's and the dashboard's
own process. Running the code (to find import errors, say) is the worker's job.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from rft.rewards.worker import REWARD_CODE_FILENAME

PER_SAMPLE = "per_sample"
BATCHED = "batched"
CONVENTION_LABELS = {PER_SAMPLE: "per-sample", BATCHED: "batched"}
BATCH_PARAMETERS = ("prompts", "completions")
SIGNATURE_HELP = (
    "write fn(prompt, completion, example) to score one completion at a time, "
    "or fn(prompts, completions, **kwargs) to score the whole batch in one call"
)


class RewardCodeError(ValueError):
    """Reward code (or weights for it) that cannot be used; the message says why, in UI words."""


@dataclass(frozen=True)
class RewardFunctionInfo:
    name: str
    convention: str  # PER_SAMPLE or BATCHED
    summary: str  # first line of the docstring, "" when there is none
    line: int
    parameters: tuple[str, ...]
    takes_any_keyword: bool  # has **kwargs, so a batched call passes it every dataset column

    def describe(self) -> str:
        text = f"{self.name} ({CONVENTION_LABELS[self.convention]}, line {self.line})"
        return f"{text}: {self.summary}" if self.summary else text


@dataclass
class CheckResult:
    functions: list[RewardFunctionInfo] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def function_names(self) -> list[str]:
        return [info.name for info in self.functions]

    def message(self) -> str:
        """A summary the dashboard shows as it is: problems first, then the functions found."""
        lines = []
        if self.errors:
            count = len(self.errors)
            lines.append(f"{count} problem{'s' if count > 1 else ''}:")
            lines.extend(_bullet(error) for error in self.errors)
        if self.functions:
            count = len(self.functions)
            lines.append(f"{count} reward function{'s' if count > 1 else ''} found:")
            lines.extend(_bullet(info.describe()) for info in self.functions)
        return "\n".join(lines)


def analyse_source(source: str) -> CheckResult:
    """The reward functions `source` defines and the problems visible without running it."""
    try:
        tree = parse_reward_code(source)
    except RewardCodeError as exc:
        return CheckResult(errors=[str(exc)])
    functions, errors = find_reward_functions(tree)
    return CheckResult(functions, errors)


def parse_reward_code(source: str) -> ast.Module:
    """The syntax tree of `source`; a syntax error becomes a RewardCodeError naming the line."""
    try:
        # A full compile, not just ast.parse: errors like `return` outside a function only show
        # up in the compiler. Compiling runs nothing.
        compile(source, REWARD_CODE_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise RewardCodeError(_describe_syntax_error(exc, source)) from None
    except ValueError as exc:
        raise RewardCodeError(f"the code cannot be read: {exc}") from None
    return ast.parse(source)


def find_reward_functions(tree: ast.Module) -> tuple[list[RewardFunctionInfo], list[str]]:
    """Every public top-level function, with its calling convention, and a message per unusable one."""
    definitions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            definitions[node.name] = node  # a later definition replaces an earlier one, as at run time
    functions, errors = [], []
    for name, node in definitions.items():
        if isinstance(node, ast.AsyncFunctionDef):
            errors.append(f"line {node.lineno}: {name} is async; reward functions must be plain functions")
            continue
        convention = _calling_convention(node.args)
        if convention is None:
            errors.append(
                f"line {node.lineno}: def {name}({ast.unparse(node.args)}) has a signature the trainer "
                f"cannot call: {SIGNATURE_HELP} (start helper names with _ to keep them out)"
            )
            continue
        arguments = node.args
        named = arguments.posonlyargs + arguments.args + arguments.kwonlyargs
        docstring = ast.get_docstring(node) or ""
        functions.append(RewardFunctionInfo(
            name=name,
            convention=convention,
            summary=docstring.strip().splitlines()[0] if docstring.strip() else "",
            line=node.lineno,
            parameters=tuple(argument.arg for argument in named),
            takes_any_keyword=arguments.kwarg is not None,
        ))
    if not definitions:
        errors.append(
            "no reward function found: define a top-level function whose name does not start "
            "with _, e.g. def my_reward(prompt, completion, example): return 1.0"
        )
    return functions, errors


def _calling_convention(arguments: ast.arguments) -> str | None:
    positional = [argument.arg for argument in arguments.posonlyargs + arguments.args]
    keyword_only = [argument.arg for argument in arguments.kwonlyargs]
    if arguments.kwarg is not None or set(BATCH_PARAMETERS) & set(positional + keyword_only):
        return BATCHED
    if len(positional) == 3 and arguments.vararg is None and not keyword_only:
        return PER_SAMPLE
    return None


def _describe_syntax_error(exc: SyntaxError, source: str) -> str:
    kind = "indentation error" if isinstance(exc, IndentationError) else "syntax error"
    message = f"line {exc.lineno}: {kind}: {exc.msg}"
    lines = source.splitlines()
    # Errors found by the compiler rather than the parser come without the line's text.
    code = exc.text or (lines[exc.lineno - 1] if exc.lineno and exc.lineno <= len(lines) else "")
    if code.strip():
        message += f"\n    {code.rstrip()}"
        if exc.offset and exc.offset > 0:
            message += "\n    " + " " * (exc.offset - 1) + "^"
    return message


def _bullet(text: str) -> str:
    first, *rest = text.splitlines()
    return "\n".join([f"- {first}", *(f"  {line}" for line in rest)])


def missing_example_keys(source: str, columns: set[str]) -> list[str]:
    """One message per reward function that reads `example["key"]` for a key the dataset lacks.

    Such a function raises KeyError on every completion, so the run would score nothing with it:
    the mistake of keeping one task's reward code after switching to another dataset. Keys read
    with `example.get(...)` are optional by the code's own choice and are not reported."""
    try:
        tree = parse_reward_code(source)
    except RewardCodeError:
        return []
    messages = []
    for function in tree.body:
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if "example" not in [argument.arg for argument in function.args.args]:
            continue
        read = {node.slice.value for node in ast.walk(function)
                if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "example"
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)}
        missing = sorted(read - columns)
        if missing:
            keys = ", ".join(f"example[{key!r}]" for key in missing)
            have = ", ".join(sorted(columns)) or "none besides the prompt"
            messages.append(f"{function.name} reads {keys}, which this dataset does not have (its columns: {have}); "
                            "every call would fail. Use reward code written for this dataset (a built-in dataset's "
                            "recipe, or your own).")
    return messages
