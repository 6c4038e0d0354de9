"""Gradio playground for Gemma-2-9b-it on OpenVINO."""
