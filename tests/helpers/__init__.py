"""What the tests share besides fixtures (those are in `tests/conftest.py`): no test module is
imported by another.

- `browser`: opening the app in Chromium, screenshots, the controls a test moves;
- `waiting`: waiting on a condition with a bound;
- `fakes`: a recording fake engine;
- `hostile_server`: a broken or hostile OpenAI-compatible server, run as a process;
- `offline`: the error the hub gives without network;
- `tutor`: a tiny training run, in a process of its own.
"""
