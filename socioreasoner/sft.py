"""`python -m socioreasoner.sft`: the SFT warm start, kept where users call it; the code is `socioreasoner.training.sft`."""

from socioreasoner.training.sft import main

if __name__ == "__main__":
    main()
