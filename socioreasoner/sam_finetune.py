"""`python -m socioreasoner.sam_finetune`: SAM2 fine-tuning, kept where users call it; the code is `socioreasoner.training.sam_finetune`."""

from socioreasoner.training.sam_finetune import main

if __name__ == "__main__":
    main()
