"""The benchmarks, run as `python -m playground.bench` (see `__main__`).

Owns: timing, and only here (the test suite checks behaviour, never speed): `engines` (both
engines and the app, side by side), `serving` (several visitors at once, locally and on a remote
engine), `peers` (llama.cpp beside genai) and `measure` (what they share: the table cell, peak
memory, the CPU's name, package versions).
Does not own: the engines or the app (it drives them as a user would).
"""
