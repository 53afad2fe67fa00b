"""socioreasoner: urban socio-semantic segmentation with vision-language reasoning (SocioReasoner on TRL).

Modules: `data` (SocioSeg loading, toy city), `frame` (Qwen coordinate frame), `prompts`,
`parsing`, `rewards`, `segmenter` (SAM2), `render`, `metrics`, `pipeline` (the shared two-stage
rollout steps), `trainer` / `config` (two-stage GRPO), `inference` / `predict` / `evaluate`,
`sft`, `demo`, `tiny` (offline tiny models), `cli` (the `socioreasoner COMMAND` entry point).
`compat/` holds every patch of third-party internals (TRL, vLLM), each naming the versions it was written for;
nothing else reaches into TRL's or vLLM's private code.
"""

__version__ = "0.1.0"
