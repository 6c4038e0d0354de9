"""Gradio playground for Gemma-2-9b-it on OpenVINO.

Owns nothing itself: each module's docstring says what it owns (errors, chat_format, tokens,
inspection, sampling, settings, models, engine, session, display, the ui package, cli, bench).
"""
