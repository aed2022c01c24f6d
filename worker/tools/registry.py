"""The tool registry: what each configured tool is, its JSON Schema, and how to run it."""

import asyncio
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError, create_model

from temporal_executor.schemas.config import ToolSettings
from temporal_executor.schemas.conversation import ToolSpec
from temporal_executor.worker.errors import ConfigurationError, InvalidToolArguments
from temporal_executor.worker.tools.builtin import BUILTIN_TOOLS


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    settings: ToolSettings
    function: Callable[..., Any]
    # Validates and converts arguments; built from the function's signature.
    arguments_model: type[Any] | None

    async def __call__(self, arguments: dict[str, Any]) -> Any:
        kwargs = self._validated(arguments)
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**kwargs)
        # Sync tools may block (files, HTTP); keep the activity's event loop free.
        return await asyncio.to_thread(self.function, **kwargs)

    def _validated(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.arguments_model is None:
            return arguments
        try:
            validated = self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            msg = f"invalid arguments for tool {self.spec.name!r}: {problems}"
            raise InvalidToolArguments(msg) from None
        return {name: getattr(validated, name) for name in type(validated).model_fields}


class ToolSource(Protocol):
    """Tools that may change while the worker runs: an MCP server's, as last listed."""

    def tools(self) -> Mapping[str, Tool]: ...


class ToolRegistry:
    """Every tool config names, resolved once at worker start (a bad entry fails start),
    then the tools of each source. A name already taken keeps its first owner."""

    def __init__(self, settings: list[ToolSettings], sources: Sequence[ToolSource] = ()) -> None:
        self._tools = {entry.name: _load(entry) for entry in settings}
        self._sources = list(sources)

    @property
    def names(self) -> list[str]:
        return list(self._all())

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name) or self._all().get(name)

    def _all(self) -> dict[str, Tool]:
        tools = dict(self._tools)
        for source in self._sources:
            for name, tool in source.tools().items():
                tools.setdefault(name, tool)
        return tools


def _load(entry: ToolSettings) -> Tool:
    function = _resolve_function(entry)
    model = None if entry.parameters is not None else _arguments_model(entry.name, function)
    parameters = entry.parameters or (model.model_json_schema() if model else {})
    parameters.pop("title", None)
    description = entry.description or inspect.getdoc(function) or ""
    spec = ToolSpec(name=entry.name, description=description, parameters=parameters)
    return Tool(spec=spec, settings=entry, function=function, arguments_model=model)


def _resolve_function(entry: ToolSettings) -> Callable[..., Any]:
    if entry.function is None:
        factory = BUILTIN_TOOLS.get(entry.name)
        if factory is None:
            msg = (
                f"tools: {entry.name!r} is not a built-in tool "
                f"({', '.join(BUILTIN_TOOLS)}); give it a `function: module:callable`"
            )
            raise ConfigurationError(msg)
        return factory(**entry.options)
    module_name, _, attribute = entry.function.partition(":")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        msg = f"tools: {entry.name!r}: cannot load {entry.function!r}: {exc}"
        raise ConfigurationError(msg) from None
    if not callable(function):
        msg = f"tools: {entry.name!r}: {entry.function!r} is not callable"
        raise ConfigurationError(msg)
    if entry.options:
        return _bind_options(function, entry.options)
    return function  # type: ignore[no-any-return]


def _bind_options(function: Callable[..., Any], options: dict[str, Any]) -> Callable[..., Any]:
    """A factory configured with options returns the tool function."""
    tool = function(**options)
    if not callable(tool):
        msg = f"tool factory {function.__name__} did not return a callable"
        raise ConfigurationError(msg)
    return tool  # type: ignore[no-any-return]


def _arguments_model(name: str, function: Callable[..., Any]) -> type[Any]:
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = Any if parameter.annotation is parameter.empty else parameter.annotation
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model: type[BaseModel] = create_model(f"{name}_arguments", **fields)
    return model
