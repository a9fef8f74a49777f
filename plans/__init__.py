"""The plan library: one module per plan, each exposing its input model and `plan`.

`reasoner plans` lists them; a module `plans/verified_digits.py` is the plan
`verified-digits`.
"""
