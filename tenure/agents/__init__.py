"""How agents are written: ``@agent``, ``@tool`` and :class:`Context`."""

from ._context import Context, Parallel, ParallelTask
from ._decorators import Agent, Tool, agent, tool

__all__ = ["Agent", "Context", "Parallel", "ParallelTask", "Tool", "agent", "tool"]
