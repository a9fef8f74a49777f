"""A plan module that raises while it is imported (`reasoner run raising_plan:plan`)."""

raise RuntimeError("boom")
