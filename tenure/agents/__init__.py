"""How agents are written: ``@agent``, ``@tool`` and :class:`Context`."""
