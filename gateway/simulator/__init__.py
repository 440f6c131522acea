"""A fake LLM provider speaking the OpenAI and Anthropic APIs, for demos, tests and load tests.

`agent` decides what the model answers (a tool-using agent when tools are sent), `openai`
and `anthropic` speak the two wire formats, `app` serves them over raw ASGI.
"""

from gateway.simulator.app import SimulatorSettings, create_simulator_app, run_simulator

__all__ = ["SimulatorSettings", "create_simulator_app", "run_simulator"]
