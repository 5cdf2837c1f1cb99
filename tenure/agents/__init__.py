"""How agents are written: ``@agent``, ``@tool`` and :class:`Context`."""

from ._calls import ModelCall
from ._context import Context, Parallel, ParallelTask, current_context
from ._decorators import Agent, Tool, agent, tool

__all__ = [
    "Agent",
    "Context",
    "ModelCall",
    "Parallel",
    "ParallelTask",
    "Tool",
    "agent",
    "current_context",
    "tool",
]
