"""Training: the two-stage GRPO trainer (a `trl.GRPOTrainer` subclass, `trainer`), its config, the stage batches and
TRL reward adapters, checkpoints and resume, the launch guard, the SFT warm start and SAM2 fine-tuning.

May import: TRL, accelerate, peft, DeepSpeed (lazily), `socioreasoner.compat`, and every layer below it (`method`,
`models`, `data`, `inference`'s predictor for evaluation callbacks).
"""
