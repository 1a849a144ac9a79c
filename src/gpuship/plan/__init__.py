"""The planner: turns a project and its settings into a :class:`BuildPlan` — which base, which platforms, which
Python, which requirements (after CUDA targeting), what the image runs. It decides; it builds nothing."""

from .build_plan import BuildOptions, BuildPlan, make_plan

__all__ = ["BuildOptions", "BuildPlan", "make_plan"]
